"""A Django service that only the listed callers may call: one file, no project scaffolding.

Configuration comes from the environment: ``AUDIENCE`` (this service's URL, as
callers address it), ``ALLOWED_CALLERS`` (comma-separated service-account emails)
and, off Google Cloud, ``S2SAUTH_CERTS_URL`` (the emulator's keys)::

    python examples/server_django.py runserver 8080               # Django's dev server
    cd examples && python -m waitress --port 8080 --call server_django:wsgi
    uvicorn --factory --app-dir examples server_django:asgi

``/healthz`` needs no token; ``/`` greets the verified caller.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

AUDIENCE = os.environ["AUDIENCE"]

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=[urlsplit(AUDIENCE).hostname, "127.0.0.1", "localhost"],
    # First, so nothing else acts on a request before its caller is verified.
    MIDDLEWARE=["s2sauth.django.IDTokenMiddleware"],
    # For `manage.py check` to report a missing or contradictory S2SAUTH.
    INSTALLED_APPS=["s2sauth.django"],
    S2SAUTH={
        "AUDIENCE": AUDIENCE,
        "ALLOWED_CALLERS": os.environ["ALLOWED_CALLERS"].split(","),
        "EXEMPT": ["/healthz"],
    },
    # One INFO line per refused request, with the reason (never the token).
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "loggers": {"s2sauth": {"handlers": ["console"], "level": "INFO"}},
    },
)


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": request.caller.email})


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("", hello), path("healthz", healthz)]


def wsgi() -> object:
    """The WSGI application (``waitress --call server_django:wsgi``)."""
    return get_wsgi_application()


def asgi() -> object:
    """The ASGI application (``uvicorn --factory server_django:asgi``)."""
    return get_asgi_application()


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
