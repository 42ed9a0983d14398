"""s2sauth.django.rest_framework: DRF views authenticated by ID token, under real servers.

The inbound contract runs against ``/drf/...`` of the test project (no
middleware) under waitress and uvicorn. DRF renders errors itself: its bodies
are the same JSON objects as the middleware's, its ``WWW-Authenticate``
challenges the same; it sends no ``Cache-Control``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import test_django
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django_site import ALLOWED, AUDIENCE, CALLER, MIDDLEWARE, OPS, STRANGER
from django_site.testing import django_server, s2sauth_settings
from test_django import DjangoContract, bearer
from test_inbound_adapters import CountingSyncVerifier, dead_url, expired

from s2sauth.django.rest_framework import CallerUser, IsAllowedCaller
from s2sauth.emulator import Emulator
from s2sauth.verify.caller import Caller

# The module fixtures are test_django's: one emulator, transport and client for both files.
emulator, transport, client = test_django.emulator, test_django.transport, test_django.client


class DRFContract(DjangoContract):
    """IDTokenAuthentication + IsAllowedCaller on DRF views; /drf/admin allows ops only."""

    middleware = ()
    prefix = "/drf"

    def assert_denied(
        self, response: httpx.Response, status: int, reason: str, token: str = ""
    ) -> None:
        """The contract's checks, less Cache-Control, which DRF's error responses lack."""
        assert response.status_code == status, response.text
        assert self.payload(response)["reason"] == reason
        assert response.headers["content-type"] == "application/json"
        if token:
            assert token not in response.text
            assert token.split(".")[-1] not in str(response.headers)

    def test_async_view(self) -> None:
        """DRF views are sync only: nothing to check here."""

    def test_user_and_auth(self, servers: Any, client: httpx.Client, emulator: Emulator) -> None:
        """request.user is a CallerUser named by the email; request.auth and .caller the Caller."""
        response = client.get(f"{servers()}/hello", headers=bearer(emulator.mint(AUDIENCE)))
        body = response.json()
        assert body["email"] == body["user"] == body["caller"] == CALLER
        assert body["pk"].isdigit()

    def test_anonymous_allowed_where_the_view_allows_it(
        self, servers: Any, client: httpx.Client, emulator: Emulator
    ) -> None:
        """Without a token, or with another scheme, the authentication stands aside (AllowAny)."""
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            response = client.get(f"{servers()}/open", headers=headers)
            assert response.json() == {"email": None, "authenticated": False}
        token = emulator.mint(AUDIENCE)
        response = client.get(f"{servers()}/open", headers=bearer(token))
        assert response.json() == {"email": CALLER, "authenticated": True}
        bad = client.get(f"{servers()}/open", headers=bearer(emulator.mint("https://x.example")))
        self.assert_denied(bad, 401, "audience_mismatch")

    def test_challenge_with_error_code(
        self, servers: Any, client: httpx.Client, emulator: Emulator
    ) -> None:
        """DRF's 401 has the middleware's challenge, error code included; 403 names the scope."""
        response = client.get(f"{servers()}/hello", headers=bearer(expired(emulator)))
        assert response.headers["www-authenticate"] == (
            'Bearer realm="s2sauth", error="invalid_token", '
            'error_description="the token has expired"'
        )
        forbidden = client.get(
            f"{servers()}/hello", headers=bearer(emulator.mint(AUDIENCE, account=STRANGER))
        )
        assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]


class TestDRFWSGI(DRFContract):
    """DRF under waitress."""

    kind = "wsgi"


class TestDRFASGI(DRFContract):
    """DRF under uvicorn (Django's ASGI handler runs the sync APIView in a thread)."""

    kind = "asgi"


def test_behind_the_middleware_the_caller_is_reused(
    emulator: Emulator, client: httpx.Client
) -> None:
    """Behind IDTokenMiddleware, DRF applies its permission without verifying again."""
    verifier = CountingSyncVerifier(AUDIENCE, allowed_callers=ALLOWED, certs_url=emulator.jwks_url)
    config = {"VERIFIER": verifier}
    with override_settings(S2SAUTH=config), django_server("wsgi", [MIDDLEWARE]) as url:
        tokens = [emulator.mint(AUDIENCE, account=who) for who in (OPS, CALLER)]
        answers = [client.get(f"{url}/drf/admin", headers=bearer(t)) for t in tokens]
    assert [answer.status_code for answer in answers] == [200, 403]
    assert verifier.calls == 2
    assert verifier.stats.rejected_by_reason == {"caller_not_allowed": 1}


def test_keys_down_is_503_with_retry_after(emulator: Emulator, client: httpx.Client) -> None:
    """No keys: DRF answers 503 with Retry-After and the middleware's body, never a 500."""
    with override_settings(S2SAUTH=s2sauth_settings(dead_url())):
        with django_server("wsgi", ()) as url:
            response = client.get(f"{url}/drf/hello", headers=bearer(emulator.mint(AUDIENCE)))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"] == "temporarily_unavailable"


def test_caller_user() -> None:
    """CallerUser is authenticated, not anonymous, holds no permissions, compares by unique ID."""
    caller = Caller(CALLER, "123", AUDIENCE, None, None, {})
    user = CallerUser(caller)
    assert (user.is_authenticated, user.is_anonymous, user.is_staff) == (True, False, False)
    assert (user.pk, user.get_username(), str(user)) == ("123", CALLER, CALLER)
    assert not user.has_perm("app.view_thing") and not user.has_module_perms("app")
    assert user == CallerUser(Caller(None, "123", AUDIENCE, None, None, {}))
    assert CallerUser(Caller(None, "9", AUDIENCE, None, None, {})).username == "9"


def test_permission_validates_its_allow_list() -> None:
    """A bad allow-list is an ImproperlyConfigured, at class creation for .of()."""
    with pytest.raises(ImproperlyConfigured, match="IsAllowedCaller.of"):
        IsAllowedCaller.of("not an email")
