#!/bin/sh
# Container entry point: `fastflow ARGS...` with two conveniences for swarm deployments.
#  * The API token comes from a swarm secret: FASTFLOW_API_TOKEN_FILE (default
#    /run/secrets/fastflow_token) is read into FASTFLOW_API_TOKEN unless that is set already.
#  * `agent` with FASTFLOW_COLLECTORS="HOST[:PORT] HOST[:PORT] ..." sends to every collector
#    listed (one --collector each), as hsflowd does with several collector {} blocks.
set -eu
token_file=${FASTFLOW_API_TOKEN_FILE:-/run/secrets/fastflow_token}
if [ -z "${FASTFLOW_API_TOKEN:-}" ] && [ -r "$token_file" ]; then
  FASTFLOW_API_TOKEN=$(tr -d ' \r\n\t' < "$token_file")
  export FASTFLOW_API_TOKEN
fi
if [ "${1:-}" = agent ] && [ -n "${FASTFLOW_COLLECTORS:-}" ]; then
  shift
  for c in $FASTFLOW_COLLECTORS; do
    set -- "$@" --collector "$c"
  done
  set -- agent "$@"
fi
exec fastflow "$@"
