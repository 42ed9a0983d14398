"""The Django app ``s2sauth.django``: add it to ``INSTALLED_APPS`` for its system checks."""

from __future__ import annotations

from django.apps import AppConfig


class S2SAuthConfig(AppConfig):
    """Registers the ``s2sauth`` system checks of ``settings.S2SAUTH`` (``manage.py check``)."""

    name = "s2sauth.django"
    label = "s2sauth"
    verbose_name = "s2sauth"

    def ready(self) -> None:
        """Import the checks, which registers them."""
        from . import check_settings  # noqa: F401
