# fastflow: sFlow collector + swarm autoscaler (docs/deploy.md).
#
#   docker build -t fastflow:0.1.0 .
#
# Offline (no registry, no PyPI): start FROM local bases and install from a wheelhouse in
# deploy/wheels/ (deploy/build-image.sh does all of it):
#
#   docker build --network none --build-arg BUILD_BASE=fastflow-base-build:bookworm \
#       --build-arg RUNTIME_BASE=fastflow-base:bookworm --build-arg PIP_OFFLINE=1 -t fastflow:0.1.0 .
#
# The builder compiles the Cython extensions into a virtual environment; the runtime stage gets
# only that environment (no compiler, no Cython, no sources beyond the package).
ARG BUILD_BASE=python:3.11-slim-bookworm
ARG RUNTIME_BASE=python:3.11-slim-bookworm

FROM ${BUILD_BASE} AS build
# python:*-slim has no C compiler; the local build base already has one
RUN command -v gcc >/dev/null || { apt-get update -qq \
      && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
      && rm -rf /var/lib/apt/lists/*; }
ARG PIP_OFFLINE=0
WORKDIR /src
COPY deploy/wheels/ /wheels/
COPY pyproject.toml setup.py README.md ./
COPY src/ ./src/
RUN python3 -m venv /opt/fastflow \
 && if [ "$PIP_OFFLINE" = 1 ]; then idx=--no-index; else idx=; fi \
 && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/fastflow/bin/pip install -q --no-cache-dir $idx \
      --find-links /wheels . \
 && /opt/fastflow/bin/python -c "import fastflow._decode, fastflow._pcap, \
fastflow.collector._ingest, fastflow.sources._replay" \
 && /opt/fastflow/bin/pip uninstall -q -y pip setuptools wheel 2>/dev/null || true \
 && find /opt/fastflow -name '__pycache__' -prune -exec rm -rf {} + \
 && find /opt/fastflow -name '*.pyx' -delete

FROM ${RUNTIME_BASE}
COPY --from=build /opt/fastflow /opt/fastflow
COPY deploy/docker-entrypoint.sh /usr/local/bin/fastflow-entrypoint
ENV PATH=/opt/fastflow/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    XDG_STATE_HOME=/var/lib/fastflow
RUN mkdir -p /var/lib/fastflow /etc/fastflow && fastflow --version
# sFlow (UDP) and the REST API / dashboard (TCP). The Docker socket is mounted by the stack, so the
# process runs as root inside the container (docs/deploy.md).
EXPOSE 6343/udp 8008/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8008/version', timeout=4)"
ENTRYPOINT ["fastflow-entrypoint"]
CMD ["run", "--config", "/etc/fastflow/fastflow.toml", "--http-bind", "0.0.0.0"]
