"""REST routes of the scaler (``/scaler/...``).

The controller (:class:`fastflow.scaler.controller.Scaler`) offers plain methods (state,
set_enabled, update_service, events); this module checks the scaler token, turns requests into those
calls and their errors into HTTP answers. State switches via GET (sFlow-RT's ``?state=enabled``)
check the token here too. A request carrying either valid token (the scaler's or the API's) is
accepted. Adding a service that is not managed yet is an explicit choice: a PUT whose body says
``"manage": true``, and only when a token is configured (``replicas_max`` <= the ceiling).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from fastflow.scaler.controller import NotManaged, Scaler, ServiceState, StateNotSaved
from fastflow.scaler.policy import PolicyError
from fastflow.web.http import HTTPError, Request, Response, Route, json_response


def scaler_routes(scaler: Scaler) -> list[Route]:
    """``/scaler/json``, ``/scaler/events/json``, ``/scaler/{service}/json`` (GET and PUT)."""

    def tokens() -> list[str]:
        return [t for t in (scaler.token, getattr(scaler, "api_token", "")) if t]

    def check_token(req: Request) -> None:
        if req.authorised:   # the server accepted the API or the scaler token
            return
        valid = tokens()
        if not valid:
            return
        auth = req.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not given or not any(hmac.compare_digest(given.encode(), t.encode()) for t in valid):
            raise HTTPError(401, "this change needs the scaler or API token "
                                 "(Authorization: Bearer ...)")

    def state_arg(req: Request) -> bool | None:
        s = req.arg("state")
        if s is None:
            return None
        if s not in ("enabled", "disabled"):
            raise HTTPError(400, f"state must be 'enabled' or 'disabled', got {s!r}")
        return s == "enabled"

    def apply(name: str, changes: Mapping[str, Any], create: bool = False) -> ServiceState:
        try:
            return scaler.update_service(name, changes, create=create)
        except NotManaged as exc:
            raise HTTPError(404, str(exc)) from None
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
        manage = body.pop("manage", False)
        if not isinstance(manage, bool):
            raise HTTPError(400, "manage: expected true or false")
        name = req.params["service"]
        if manage and name not in scaler.services and not tokens():
            raise HTTPError(403, f"adding service {name} at run time needs a token: set [api] token "
                                 "or [scaler] token (or add it to [[scaler.services]] / label it "
                                 "fastflow.scale=true)")
        return json_response(apply(name, body, create=manage).to_dict())

    # the server checks tokens (API or scaler) and refuses cross-site changes for these flags
    return [
        Route("GET", "/scaler/json", get_all, mutates_on=("state",), tokens=tokens),
        Route("GET", "/scaler/events/json", get_events),
        Route("GET", "/scaler/{service}/json", get_service, mutates_on=("state",), tokens=tokens),
        Route("PUT", "/scaler/{service}/json", put_service, mutating=True, tokens=tokens),
    ]
