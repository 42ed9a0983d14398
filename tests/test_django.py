"""s2sauth.django: the middleware and the decorator in a Django project under real servers.

The project (``tests/django_site``) is served by waitress (WSGI) and by uvicorn
(Django's ASGI handler); tokens come from the emulator, requests from httpx. The
inbound contract every adapter meets runs against each combination. Django's
settings are process-wide: the project is configured once, and every variation
of ``S2SAUTH`` or ``MIDDLEWARE`` is an ``override_settings`` that ends with its test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import httpx
import pytest
from asgiref.sync import iscoroutinefunction
from cryptography.hazmat.primitives.asymmetric import rsa
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from django_site import ALLOWED, AUDIENCE, CALLER, MIDDLEWARE, OPS, STRANGER
from django_site.testing import (
    SettingsSwitch,
    django_server,
    s2sauth_settings,
)
from test_inbound_adapters import (
    CountingSyncVerifier,
    CountingVerifier,
    InboundContract,
    dead_url,
)

from s2sauth._http import HTTPTransport
from s2sauth.django import IDTokenMiddleware, get_verifier, require_id_token
from s2sauth.emulator import Emulator
from s2sauth.verify.policy import Rule
from s2sauth.verify.verifier import Verifier


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator with a caller, a stranger and an operator account."""
    with Emulator((CALLER, STRANGER, OPS), signing_key=emulator_key) as emu:
        yield emu


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """The key-fetch transport of the verifiers the contract builds itself."""
    transport = HTTPTransport()
    yield transport
    transport.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A plain httpx client that ignores proxy settings."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class DjangoContract(InboundContract):
    """The contract against the Django project; subclasses pick the server and the guard.

    Django settings are process-wide, so one server per class serves every
    verifier variant: asking for a variant's URL makes its ``S2SAUTH`` current.
    """

    kind: ClassVar[str]  # "wsgi" or "asgi"
    middleware: ClassVar[tuple[str, ...]] = (MIDDLEWARE,)
    prefix: ClassVar[str] = ""

    @pytest.fixture(scope="class")
    @classmethod
    def servers(
        cls, emulator: Emulator, transport: HTTPTransport
    ) -> Iterator[Callable[[str], str]]:
        """The project under one server; ``servers(variant)`` switches ``S2SAUTH``."""
        configs = {
            "standard": s2sauth_settings(emulator.jwks_url),
            "trusting": s2sauth_settings(emulator.jwks_url, TRUST_CLOUD_RUN_IAM=True),
            "keys_down": s2sauth_settings(dead_url()),
        }
        switch = SettingsSwitch()
        with django_server(cls.kind, cls.middleware) as origin:
            try:

                def url(variant: str = "standard") -> str:
                    switch.use(configs[variant])
                    return origin + cls.prefix

                yield url
            finally:
                switch.close()

    @classmethod
    @contextmanager
    def serve(cls, verifier: Verifier) -> Iterator[str]:
        """The project with ``S2SAUTH["VERIFIER"]`` set to ``verifier``."""
        config = {
            "VERIFIER": verifier,
            "EXEMPT": ["/healthz"],
            "RULES": [Rule("/admin", [OPS])],
        }
        with override_settings(S2SAUTH=config), django_server(cls.kind, cls.middleware) as url:
            yield url + cls.prefix

    def test_async_view(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """An async view sees request.caller; without a token it is never reached."""
        response = client.get(f"{servers()}/async", headers=bearer(emulator.mint(AUDIENCE)))
        assert response.json() == {"email": CALLER, "kind": "async"}
        self.assert_denied(client.get(f"{servers()}/async"), 401, "missing_token")


class MiddlewareContract(DjangoContract):
    """IDTokenMiddleware first in MIDDLEWARE, rules and exempt paths from S2SAUTH."""

    def test_rules_match_the_path_inside_the_app(
        self, emulator: Emulator, client: httpx.Client
    ) -> None:
        """Mounted at /svc, /svc/admin is the app's /admin (its rule) and /svc/healthz exempt."""
        switch = SettingsSwitch()
        switch.use(s2sauth_settings(emulator.jwks_url))
        try:
            with django_server(self.kind, self.middleware, wrap=_mounted(self.kind)) as origin:
                health = client.get(f"{origin}/svc/healthz")
                where = client.get(f"{origin}/svc/where", headers=bearer(emulator.mint(AUDIENCE)))
                admin = client.get(f"{origin}/svc/admin", headers=bearer(emulator.mint(AUDIENCE)))
        finally:
            switch.close()
        assert health.status_code == 200
        assert where.json() == {"email": CALLER, "path": "/svc/where", "path_info": "/where"}
        self.assert_denied(admin, 403, "caller_not_allowed")


def _mounted(kind: str) -> Callable[[Any], Any]:
    """Wrap an app so it is mounted at /svc: SCRIPT_NAME for WSGI, root_path for ASGI."""

    def wsgi(app: Any) -> Any:
        def mounted(environ: dict[str, Any], start_response: Any) -> Any:
            environ["SCRIPT_NAME"] = "/svc"
            environ["PATH_INFO"] = environ["PATH_INFO"].removeprefix("/svc")
            return app(environ, start_response)

        return mounted

    def asgi(app: Any) -> Any:
        async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await app({**scope, "root_path": "/svc"}, receive, send)

        return mounted

    return wsgi if kind == "wsgi" else asgi


class TestMiddlewareWSGI(MiddlewareContract):
    """The middleware in Django's WSGI handler, under waitress."""

    kind = "wsgi"


class TestMiddlewareASGI(MiddlewareContract):
    """The middleware in Django's ASGI handler, under uvicorn."""

    kind = "asgi"


class DecoratorContract(DjangoContract):
    """@require_id_token on views, no middleware: /decorated/admin allows ops only."""

    middleware = ()
    prefix = "/decorated"

    @pytest.mark.parametrize(
        ("path", "account", "kind"),
        [
            pytest.param("bare", CALLER, "bare", id="sync function, no parentheses"),
            pytest.param("class", OPS, "class", id="class-based, decorated class"),
            pytest.param("async-class", CALLER, "async class", id="async class-based"),
            pytest.param("method", OPS, "method", id="method_decorator"),
            pytest.param("async-method", CALLER, "async method", id="async method_decorator"),
        ],
    )
    def test_view_shapes(
        self,
        servers: Callable[..., str],
        client: httpx.Client,
        emulator: Emulator,
        path: str,
        account: str,
        kind: str,
    ) -> None:
        """Every shape of view: the allowed caller gets in, no token is 401, a stranger 403."""
        url = f"{servers()}/{path}"
        response = client.get(url, headers=bearer(emulator.mint(AUDIENCE, account=account)))
        assert response.json() == {"email": account, "kind": kind}
        self.assert_denied(client.get(url), 401, "missing_token")
        stranger = client.get(url, headers=bearer(emulator.mint(AUDIENCE, account=STRANGER)))
        self.assert_denied(stranger, 403, "caller_not_allowed")

    def test_view_allow_list(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """A decorated class with allowed_callers=[ops] refuses the default caller."""
        token = emulator.mint(AUDIENCE, account=CALLER)
        for path in ("class", "method"):
            response = client.get(f"{servers()}/{path}", headers=bearer(token))
            self.assert_denied(response, 403, "caller_not_allowed")


class TestDecoratorWSGI(DecoratorContract):
    """The decorator under waitress (async views run through async_to_sync)."""

    kind = "wsgi"


class TestDecoratorASGI(DecoratorContract):
    """The decorator under uvicorn (sync views run in a thread)."""

    kind = "asgi"


# --- behind the middleware ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "counting"), [("wsgi", CountingSyncVerifier), ("asgi", CountingVerifier)]
)
def test_decorator_reuses_the_middleware_caller(
    kind: str, counting: type[Verifier], emulator: Emulator, client: httpx.Client
) -> None:
    """Behind the middleware the decorator applies its allow-list without verifying again."""
    verifier = counting(AUDIENCE, allowed_callers=ALLOWED, certs_url=emulator.jwks_url)
    with (
        override_settings(S2SAUTH={"VERIFIER": verifier}),
        django_server(kind, [MIDDLEWARE]) as url,
    ):
        answers = [
            client.get(
                f"{url}/decorated/admin", headers=bearer(emulator.mint(AUDIENCE, account=who))
            )
            for who in (OPS, CALLER)
        ]
    assert [answer.status_code for answer in answers] == [200, 403]
    assert verifier.calls == 2
    assert verifier.stats.rejected_by_reason == {"caller_not_allowed": 1}


def test_same_answers_as_the_asgi_adapter(emulator: Emulator, client: httpx.Client) -> None:
    """A denial's status, body and headers are s2sauth.asgi's for the same request, exactly."""
    from test_inbound_adapters import starlette_app, uvicorn_server

    token = emulator.mint("https://other.example")
    verifier = Verifier(AUDIENCE, allowed_callers=ALLOWED, certs_url=emulator.jwks_url)
    with ExitStack() as stack:
        stack.enter_context(override_settings(S2SAUTH={"VERIFIER": verifier}))
        django_url = stack.enter_context(django_server("wsgi", [MIDDLEWARE]))
        asgi_url = stack.enter_context(uvicorn_server(starlette_app(verifier)))
        for headers in ({}, bearer(token), bearer(emulator.mint(AUDIENCE, account=STRANGER))):
            ours = client.get(f"{django_url}/hello", headers=headers)
            theirs = client.get(f"{asgi_url}/hello", headers=headers)
            assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
            for name in ("www-authenticate", "content-type", "cache-control", "content-length"):
                assert ours.headers.get(name) == theirs.headers.get(name), name


# --- sync and async -----------------------------------------------------------------------


def test_middleware_follows_the_chain_mode() -> None:
    """The middleware is a coroutine function in front of async code, a plain callable otherwise."""

    async def async_view(request: Any) -> Any:
        return None

    def sync_view(request: Any) -> Any:
        return None

    assert iscoroutinefunction(IDTokenMiddleware(async_view))
    assert not iscoroutinefunction(IDTokenMiddleware(sync_view))
    assert IDTokenMiddleware.sync_capable and IDTokenMiddleware.async_capable


@pytest.mark.parametrize("handler", [WSGIHandler, ASGIHandler])
def test_no_mode_switch_around_the_middleware(
    handler: type[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Neither handler adapts the middleware (Django logs every adaptation when DEBUG is on)."""
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        with override_settings(DEBUG=True, MIDDLEWARE=[MIDDLEWARE]):
            handler()
    adapted = [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]
    assert not [message for message in adapted if "IDTokenMiddleware" in message], adapted


# --- configuration ------------------------------------------------------------------------


def _get_response(request: Any) -> Any:
    return None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(None, "S2SAUTH: missing", id="missing"),
        pytest.param(["x"], "must be a dict", id="not a dict"),
        pytest.param({"AUDIENCE": AUDIENCE, "ALLOWED_CALLER": [CALLER]}, "unknown key", id="typo"),
        pytest.param({"ALLOWED_CALLERS": [CALLER]}, "AUDIENCE is missing", id="no audience"),
        pytest.param({"AUDIENCE": AUDIENCE, "ALLOWED_CALLERS": []}, "allow-list is empty", id="[]"),
        pytest.param({"AUDIENCE": AUDIENCE, "LEEWAY": 600}, "leeway", id="leeway"),
        pytest.param({"AUDIENCE": AUDIENCE, "EXEMPT": ["healthz"]}, "exempt path", id="exempt"),
        pytest.param({"AUDIENCE": AUDIENCE, "EXEMPT": None}, "EXEMPT must be", id="exempt type"),
        pytest.param({"AUDIENCE": AUDIENCE, "RULES": [{"PATH": "/a"}]}, "a rule", id="rule"),
        pytest.param({"AUDIENCE": AUDIENCE, "RULES": ["/a"]}, "each of RULES", id="rule type"),
        pytest.param({"AUDIENCE": AUDIENCE, "REALM": 'a"\n'}, "realm", id="realm"),
        pytest.param({"AUDIENCE": 5}, "AUDIENCE must be", id="audience type"),
        pytest.param({"AUDIENCE": AUDIENCE, "LEEWAY": "x"}, "leeway", id="leeway type"),
        pytest.param({"VERIFIER": "no.such.module"}, "cannot be imported", id="verifier path"),
        pytest.param(
            {"VERIFIER": "django_site.ALLOWED"}, "VERIFIER must be a Verifier", id="verifier type"
        ),
        pytest.param(
            {"VERIFIER": "django_site.views.hello"}, "cannot be called", id="verifier factory"
        ),
    ],
)
def test_bad_settings_fail_at_startup(config: Any, message: str) -> None:
    """A missing or invalid S2SAUTH is an ImproperlyConfigured naming the problem, at startup."""
    with override_settings(S2SAUTH=config), pytest.raises(ImproperlyConfigured) as caught:
        IDTokenMiddleware(_get_response)
    assert message in str(caught.value)
    assert "S2SAUTH" in str(caught.value)


def test_verifier_setting_contradicts_verifier_options() -> None:
    """VERIFIER with AUDIENCE (or any other verifier option) is refused."""
    verifier = Verifier(AUDIENCE, certs_url=dead_url())
    with override_settings(S2SAUTH={"VERIFIER": verifier, "AUDIENCE": AUDIENCE}):
        with pytest.raises(ImproperlyConfigured, match="contradict"):
            IDTokenMiddleware(_get_response)


def test_verifier_setting_by_dotted_path() -> None:
    """VERIFIER may name a Verifier or a function returning one; it is then the shared one."""
    with override_settings(S2SAUTH={"VERIFIER": "test_django.make_verifier"}):
        assert get_verifier().audiences == {"https://dotted.example"}


def make_verifier() -> Verifier:
    """The factory test_verifier_setting_by_dotted_path names."""
    return Verifier("https://dotted.example", certs_url=dead_url())


def test_one_verifier_per_settings() -> None:
    """The verifier is built once, and again (the old one closed) when S2SAUTH changes."""
    first = get_verifier()
    assert get_verifier() is first
    with override_settings(S2SAUTH={"AUDIENCE": "https://else.example", "ALLOWED_CALLERS": None}):
        other = get_verifier()
        assert other.audiences == {"https://else.example"}
        assert other.policy is None
    assert get_verifier() is not other
    assert get_verifier().audiences == {AUDIENCE}


def test_decorator_validates_its_allow_list() -> None:
    """A bad allow-list is an ImproperlyConfigured when the view is decorated."""
    with pytest.raises(ImproperlyConfigured, match="require_id_token"):
        require_id_token(allowed_callers=["not an email"])


# --- system checks ------------------------------------------------------------------------


def _check_ids(config: Any) -> list[str]:
    with override_settings(S2SAUTH=config):
        return [message.id for message in checks.run_checks(tags=["s2sauth"])]


def test_the_app_registers_its_checks() -> None:
    """s2sauth.django is an installed app labelled s2sauth, and its checks run on `check`."""
    assert apps.get_app_config("s2sauth").name == "s2sauth.django"
    assert checks.registry.registry.tag_exists("s2sauth")


@pytest.mark.parametrize(
    ("config", "ids"),
    [
        pytest.param({"AUDIENCE": AUDIENCE, "ALLOWED_CALLERS": [CALLER]}, [], id="good"),
        pytest.param({"AUDIENCE": AUDIENCE, "ALLOWED_CALLERS": None}, [], id="open on purpose"),
        pytest.param(
            {"AUDIENCE": AUDIENCE, "TRUST_CLOUD_RUN_IAM": True}, [], id="IAM decides who calls"
        ),
        pytest.param(None, ["s2sauth.E001"], id="missing"),
        pytest.param({"ALLOWED_CALLERS": [CALLER]}, ["s2sauth.E001"], id="no audience"),
        pytest.param({"AUDIENCE": AUDIENCE, "ALLOWED": [CALLER]}, ["s2sauth.E002"], id="typo"),
        pytest.param(
            {"VERIFIER": "test_django.make_verifier", "CERTS_URL": "https://x.example/certs"},
            ["s2sauth.E003"],
            id="contradiction",
        ),
        pytest.param({"AUDIENCE": AUDIENCE, "ALLOWED_CALLERS": "*"}, ["s2sauth.E004"], id="bad"),
        pytest.param({"AUDIENCE": AUDIENCE}, ["s2sauth.W001"], id="no allow-list"),
        pytest.param(
            {
                "AUDIENCE": AUDIENCE,
                "ALLOWED_CALLERS": [CALLER],
                "EXEMPT": ["/admin/"],
                "RULES": [{"PATH": "/admin/users", "ALLOWED_CALLERS": [OPS]}],
            },
            ["s2sauth.W002"],
            id="rule under an exempt path",
        ),
    ],
)
def test_checks(config: Any, ids: list[str]) -> None:
    """Django's check framework reports a missing, incomplete or contradictory S2SAUTH."""
    assert _check_ids(config) == ids
