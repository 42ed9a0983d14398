"""A tiny Django project for the Django and DRF tests, configured in-process once.

Django's settings are process-wide: importing this package calls :func:`configure`,
which sets them up once (settings that touch nothing outside Django: no database,
no logging configuration); tests vary ``S2SAUTH`` and ``MIDDLEWARE`` with
``override_settings``, so no other test module sees a difference.
"""

from __future__ import annotations

import django
from django.conf import settings

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
OPS = "ops@demo-project.iam.gserviceaccount.com"
ALLOWED = (CALLER, OPS)
MIDDLEWARE = "s2sauth.django.IDTokenMiddleware"


def configure() -> None:
    """Configure Django for the test project, once per process."""
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="s2sauth-tests-only",
        ALLOWED_HOSTS=["127.0.0.1", "testserver"],
        ROOT_URLCONF="django_site.urls",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "s2sauth.django",
        ],
        MIDDLEWARE=[MIDDLEWARE],
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,  # leave the test process's logging alone
        REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
        S2SAUTH={"AUDIENCE": AUDIENCE, "ALLOWED_CALLERS": list(ALLOWED)},
    )
    django.setup()


configure()
