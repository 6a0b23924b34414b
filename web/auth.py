"""Optional API tokens: with API_TOKENS set, creating and cancelling jobs need `Authorization: Bearer <token>`.
Reading a job needs only its id, which is unguessable."""
from __future__ import annotations

import functools
import hmac
from typing import Any, Callable

from flask import current_app, request

from web.errors import ApiError


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        tokens = current_app.config["API_TOKENS"]
        if tokens:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not any(hmac.compare_digest(given.strip(), t) for t in tokens):
                raise ApiError(401, "unauthorized", "this call needs 'Authorization: Bearer <token>'")
        return view(*args, **kwargs)
    return wrapped
