"""The web form: one page; everything it needs is served from web/static."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> Any:
    return render_template("index.html")
