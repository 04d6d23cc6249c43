"""REST routes of the scaler (``/scaler/...``).

The controller (:class:`fastflow.scaler.controller.Scaler`) offers plain methods (state,
set_enabled, update_service, events); this module checks the scaler token, turns requests into those
calls and their errors into HTTP answers. State switches via GET (sFlow-RT's ``?state=enabled``)
check the token here too.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from fastflow.scaler.controller import Scaler, ServiceState, StateNotSaved
from fastflow.scaler.policy import PolicyError
from fastflow.web.http import HTTPError, Request, Response, Route, json_response


def scaler_routes(scaler: Scaler) -> list[Route]:
    """``/scaler/json``, ``/scaler/events/json``, ``/scaler/{service}/json`` (GET and PUT)."""

    def check_token(req: Request) -> None:
        if req.authorised or not scaler.token:   # the server accepted the API or scaler token
            return
        auth = req.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), scaler.token.encode()):
            raise HTTPError(401, "this change needs the scaler token (Authorization: Bearer ...)")

    def state_arg(req: Request) -> bool | None:
        s = req.arg("state")
        if s is None:
            return None
        if s not in ("enabled", "disabled"):
            raise HTTPError(400, f"state must be 'enabled' or 'disabled', got {s!r}")
        return s == "enabled"

    def apply(name: str, changes: Mapping[str, Any]) -> ServiceState:
        try:
            return scaler.update_service(name, changes)
        except PolicyError as exc:
            raise HTTPError(400, str(exc)) from None
        except StateNotSaved as exc:
            raise HTTPError(500, str(exc)) from None

    def get_all(req: Request) -> Response:
        want = state_arg(req)
        if want is not None:
            check_token(req)
            try:
                scaler.set_enabled(want)
            except StateNotSaved as exc:
                raise HTTPError(500, str(exc)) from None
        return json_response(scaler.state())

    def get_events(req: Request) -> Response:
        return json_response(list(scaler.events))

    def get_service(req: Request) -> Response:
        name = req.params["service"]
        if name == "events":
            return get_events(req)
        want = state_arg(req)
        if want is not None:
            check_token(req)
            if name not in scaler.services:
                raise HTTPError(404, f"service {name} is not managed")
            apply(name, {"enabled": want})
        st = scaler.services.get(name)
        if st is None:
            raise HTTPError(404, f"service {name} is not managed")
        return json_response(st.to_dict())

    def put_service(req: Request) -> Response:
        check_token(req)
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "body must be a JSON object of scaler settings")
        return json_response(apply(req.params["service"], body).to_dict())

    # the server checks tokens (API or scaler) and refuses cross-site changes for these flags
    def tokens() -> list[str | None]:
        return [scaler.token]

    return [
        Route("GET", "/scaler/json", get_all, mutates_on=("state",), tokens=tokens),
        Route("GET", "/scaler/events/json", get_events),
        Route("GET", "/scaler/{service}/json", get_service, mutates_on=("state",), tokens=tokens),
        Route("PUT", "/scaler/{service}/json", put_service, mutating=True, tokens=tokens),
    ]
