"""Optional API tokens. With API_TOKENS set (`alice:tok1,bob:tok2:workflows`; a token without a name is named
`tokenN` after its place in the list), creating, cancelling and listing jobs need `Authorization: Bearer <token>`;
the token's client name is recorded on the jobs it creates, and a listing shows only that client's jobs. A token
with the `workflows` scope may also send raw workflows.

Reading one job (its status, images, preview) needs only its id: a random UUID, unguessable, handed only to
whoever created the job, works as the capability to read it (as a pre-signed URL does). Web pages and <img> tags
can then show a job without holding a token."""
from __future__ import annotations

import functools
import hmac
from typing import Any, Callable

from flask import current_app, g, request

from app.settings import ApiClient
from web.errors import ApiError


def authenticated_client() -> ApiClient | None:
    """The client of the request's token; None when the server sets no tokens. Any missing, malformed or unknown
    token is a 401 JSON answer."""
    tokens: dict[str, ApiClient] = current_app.config["API_TOKENS"]
    if not tokens:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    offered = given.strip().encode("utf-8", "replace")  # header values may hold any character: compare bytes
    if scheme.lower() == "bearer":
        for token, client in tokens.items():
            if hmac.compare_digest(offered, token.encode("utf-8")):
                return client
    raise ApiError(401, "unauthorized", "this call needs 'Authorization: Bearer <token>'")


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """The view runs with `g.client`: the caller's client name (None without API_TOKENS), and `g.scopes`."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        client = authenticated_client()
        g.client, g.scopes = (client.name, client.scopes) if client else (None, frozenset())
        return view(*args, **kwargs)
    return wrapped
