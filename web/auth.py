"""Optional API tokens. With API_TOKENS set (`alice:tok1,bob:tok2`; a token without a name is named `tokenN`
after its place in the list), creating, cancelling and listing jobs need `Authorization: Bearer <token>`; the
token's client name is recorded on the jobs it creates, and a listing shows only that client's jobs.

Reading one job (its status, images, preview) needs only its id: a random UUID, unguessable, handed only to
whoever created the job, works as the capability to read it (as a pre-signed URL does). Web pages and <img> tags
can then show a job without holding a token."""
from __future__ import annotations

import functools
import hmac
from typing import Any, Callable

from flask import current_app, g, request

from web.errors import ApiError


def authenticated_client() -> str | None:
    """The client name of the request's token; None when the server sets no tokens. Any missing, malformed or
    unknown token is a 401 JSON answer."""
    tokens: dict[str, str] = current_app.config["API_TOKENS"]
    if not tokens:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    offered = given.strip().encode("utf-8", "replace")  # header values may hold any character: compare bytes
    if scheme.lower() == "bearer":
        for token, name in tokens.items():
            if hmac.compare_digest(offered, token.encode("utf-8")):
                return name
    raise ApiError(401, "unauthorized", "this call needs 'Authorization: Bearer <token>'")


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """The view runs with `g.client`: the caller's client name (None without API_TOKENS)."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        g.client = authenticated_client()
        return view(*args, **kwargs)
    return wrapped
