"""Serving the test project under a real WSGI server (waitress) or ASGI server (uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

from s2sauth.cli._serve import bind, serve_asgi, serve_wsgi

from . import ALLOWED, AUDIENCE, OPS


def s2sauth_settings(certs_url: str, **extra: Any) -> dict[str, Any]:
    """The S2SAUTH setting the contract suites use: keys at ``certs_url``, /admin for ops."""
    return {
        "AUDIENCE": AUDIENCE,
        "ALLOWED_CALLERS": list(ALLOWED),
        "CERTS_URL": certs_url,
        "EXEMPT": ["/healthz"],
        "RULES": [{"PATH": "/admin", "ALLOWED_CALLERS": [OPS]}],
        **extra,
    }


def handler(kind: str, middleware: Sequence[str]) -> Any:
    """A Django WSGI or ASGI handler with ``middleware`` (read once, as a server does)."""
    with override_settings(MIDDLEWARE=list(middleware)):
        return WSGIHandler() if kind == "wsgi" else ASGIHandler()


@contextmanager
def django_server(kind: str, middleware: Sequence[str], wrap: Any = None) -> Iterator[str]:
    """Serve the project with waitress (``"wsgi"``) or uvicorn (``"asgi"``); yields the origin."""
    app = handler(kind, middleware)
    if wrap is not None:
        app = wrap(app)
    serve = serve_wsgi if kind == "wsgi" else serve_asgi
    with serve(app, bind()) as origin:
        yield origin


class SettingsSwitch:
    """Keeps one ``override_settings(S2SAUTH=...)`` active at a time, for a served project."""

    def __init__(self) -> None:
        self._active: override_settings | None = None
        self._config: object = None

    def use(self, config: dict[str, Any]) -> None:
        """Make ``config`` the S2SAUTH setting (the shared verifier is rebuilt for it)."""
        if self._active is not None and self._config is config:
            return
        self.close()
        self._active = override_settings(S2SAUTH=config)
        self._active.enable()
        self._config = config

    def close(self) -> None:
        """Restore the setting as it was."""
        if self._active is not None:
            self._active.disable()
            self._active = None
