"""Django: a middleware for the whole service, a decorator for single views, and system checks.

Configured the Django way, by one setting::

    S2SAUTH = {
        "AUDIENCE": "https://orders-xyz-uc.a.run.app",
        "ALLOWED_CALLERS": ["checkout@my-project.iam.gserviceaccount.com"],
        "EXEMPT": ["/healthz"],
        "RULES": [
            {"PATH": "/admin", "ALLOWED_CALLERS": ["ops@my-project.iam.gserviceaccount.com"]},
        ],
    }

The keys (anything else is an error, so a typo cannot silently widen access):

* ``AUDIENCE``: the audience (or list of audiences) tokens must be issued for. Required
  unless ``VERIFIER`` is given.
* ``ALLOWED_CALLERS``: the default allow-list (emails, numeric unique IDs,
  ``*@PROJECT.iam.gserviceaccount.com``); ``None`` accepts any caller with a valid token.
* ``EXEMPT``: paths served without a token (exact, or everything under an entry ending in ``/``).
* ``RULES``: per-path allow-lists, each a ``{"PATH": ..., "ALLOWED_CALLERS": [...],
  "METHODS": [...]}`` mapping or a :class:`~s2sauth.verify.policy.Rule`.
* ``REALM``: the realm of the ``WWW-Authenticate`` challenge.
* ``IAP``: an :class:`~s2sauth.iap.IAPVerifier` (or the dotted path of one), to let in
  people signed in by Identity-Aware Proxy too; ``ACCEPT``: which kind of caller each
  path takes (``"service"``, ``"person"``, ``"either"``, or ``{path prefix: kind}``).
* ``TRUST_CLOUD_RUN_IAM``, ``CERTS_URL``, ``ISSUERS``, ``LEEWAY``, ``ALGORITHMS``,
  ``CACHE_SIZE``: passed to :class:`~s2sauth.Verifier` (``trust_cloud_run_iam``,
  ``certs_url``...).
* ``VERIFIER``: instead of the options above, a :class:`~s2sauth.Verifier` (or the
  dotted path of one, or of a function returning one) to share with other code.

One :class:`~s2sauth.Verifier` serves the middleware, the decorator and
:mod:`s2sauth.django.rest_framework` alike (one key cache, one verified-token
cache); it is built on first use, rebuilt when a test overrides ``S2SAUTH``, and
available as :func:`get_verifier`. Routes match ``request.path_info``, the path
inside the application (without a ``SCRIPT_NAME`` or ASGI ``root_path``).

Add ``"s2sauth.django"`` to ``INSTALLED_APPS`` for ``manage.py check`` to report a
missing or contradictory ``S2SAUTH`` (checks ``s2sauth.E001``-``E004`` and
``s2sauth.W001``-``W002``); the middleware raises
:class:`~django.core.exceptions.ImproperlyConfigured` at startup either way.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import setting_changed
    from django.http import HttpResponse
    from django.utils.module_loading import import_string
except ModuleNotFoundError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("s2sauth.django needs Django: pip install 's2sauth[django]'") from exc

from .._errors import ConfigurationError, S2SAuthError
from ..verify.caller import Caller
from ..verify.http import DEFAULT_REALM, EXEMPT, Gate
from ..verify.policy import CallerPolicy, Rule
from ..verify.verifier import Verifier
from ..wsgi import CALLER_KEY, VERIFIER_KEY

if TYPE_CHECKING:  # pragma: no cover
    from django.http import HttpRequest

__all__ = ["IDTokenMiddleware", "get_verifier", "require_id_token"]

#: The name of the Django setting this module reads.
SETTING: Final = "S2SAUTH"

# Setting keys and the Verifier argument each one becomes.
_VERIFIER_OPTIONS: Final = {
    "AUDIENCE": "audience",
    "ALLOWED_CALLERS": "allowed_callers",
    "TRUST_CLOUD_RUN_IAM": "trust_cloud_run_iam",
    "CERTS_URL": "certs_url",
    "ISSUERS": "issuers",
    "LEEWAY": "leeway",
    "ALGORITHMS": "algorithms",
    "CACHE_SIZE": "cache_size",
}
_GATE_OPTIONS: Final = frozenset({"EXEMPT", "RULES", "REALM", "IAP", "ACCEPT"})
_KEYS: Final = frozenset(_VERIFIER_OPTIONS) | _GATE_OPTIONS | {"VERIFIER"}
_RULE_KEYS: Final = frozenset({"PATH", "ALLOWED_CALLERS", "METHODS"})
_LISTS: Final = frozenset(
    {"AUDIENCE", "ALLOWED_CALLERS", "ISSUERS", "ALGORITHMS", "EXEMPT", "RULES"}
)

V = TypeVar("V", bound=Callable[..., Any])
Response = Any  # an HttpResponse, or an awaitable of one for async views


class _SettingsError(ImproperlyConfigured):
    def __init__(self, message: str, check_id: str) -> None:
        super().__init__(f"settings.{SETTING}: {message}")
        self.check_id = check_id


# The gate (verifier + routes) the current settings describe; rebuilt after setting_changed.
_gate: Gate | None = None
_owned: Verifier | None = None  # the verifier we built, closed when the settings change
_build_lock = threading.Lock()


def _current_gate() -> Gate:
    gate = _gate
    if gate is None:
        gate = _build_gate()
    return gate


def _build_gate() -> Gate:
    global _gate, _owned
    with _build_lock:
        if _gate is None:
            config = getattr(settings, SETTING, None)
            _gate, _owned = _from_settings(config)
        return _gate


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _gate, _owned
    if setting != SETTING:
        return
    with _build_lock:
        owned, _gate, _owned = _owned, None, None
    if owned is not None:
        owned.close()


setting_changed.connect(_reset, dispatch_uid="s2sauth.django.reset")


def _from_settings(config: object) -> tuple[Gate, Verifier | None]:
    if config is None:
        raise _SettingsError(
            "missing; set it to a dict with at least AUDIENCE (the URL callers use for this "
            "service) and ALLOWED_CALLERS",
            "s2sauth.E001",
        )
    if not isinstance(config, Mapping):
        raise _SettingsError(f"must be a dict, not {type(config).__name__}", "s2sauth.E002")
    unknown = sorted(map(str, set(config) - _KEYS))
    if unknown:
        raise _SettingsError(
            f"unknown key(s) {unknown}; the keys are {sorted(_KEYS)}", "s2sauth.E002"
        )
    built: Verifier | None = None
    try:
        for key in _LISTS & set(config):
            value = config[key]
            if value is not None and not isinstance(value, str | Iterable):
                raise ConfigurationError(f"{key} must be a string or a list, not {value!r}")
        if "VERIFIER" in config:
            clashing = sorted(set(config) & (set(_VERIFIER_OPTIONS) - {"ALLOWED_CALLERS"}))
            if clashing:
                raise _SettingsError(
                    f"VERIFIER and {', '.join(clashing)} contradict each other: give the "
                    "verifier its options, or drop VERIFIER",
                    "s2sauth.E003",
                )
            verifier = _load_verifier(config["VERIFIER"])
            allowed = config.get("ALLOWED_CALLERS")
        else:
            if not config.get("AUDIENCE"):
                raise _SettingsError(
                    "AUDIENCE is missing: the URL callers use for this service (its run.app "
                    "URL on Cloud Run), or a list of them",
                    "s2sauth.E001",
                )
            options = {_VERIFIER_OPTIONS[k]: v for k, v in config.items() if k in _VERIFIER_OPTIONS}
            verifier = built = Verifier(**options)
            allowed = None  # the verifier's own allow-list is the default
        gate = Gate(
            verifier,
            allowed_callers=allowed,
            exempt=_paths(config.get("EXEMPT", ())),
            rules=[_rule(rule) for rule in config.get("RULES", ())],
            realm=config.get("REALM", DEFAULT_REALM),
            iap=_load_verifier(config["IAP"], "IAP") if config.get("IAP") else None,
            accept=config.get("ACCEPT"),
        )
    except ConfigurationError as exc:
        if built is not None:
            built.close()
        raise _SettingsError(exc.message, "s2sauth.E004") from exc
    except TypeError as exc:  # a value of the wrong shape (a number where a list goes...)
        if built is not None:
            built.close()
        raise _SettingsError(f"a value has the wrong type: {exc}", "s2sauth.E004") from exc
    return gate, built


def _load_verifier(value: object, key: str = "VERIFIER") -> Verifier:
    if isinstance(value, str):
        path = value
        try:
            value = import_string(path)
        except ImportError as exc:
            raise _SettingsError(
                f"{key} {value!r} cannot be imported: {exc}", "s2sauth.E004"
            ) from exc
        if callable(value) and not isinstance(value, Verifier):
            try:
                value = value()
            except TypeError as exc:
                raise ConfigurationError(f"{key} {path!r} cannot be called: {exc}") from exc
    if not isinstance(value, Verifier):
        raise _SettingsError(
            f"{key} must be a Verifier, or the dotted path of one or of a function "
            f"returning one, not {type(value).__name__}",
            "s2sauth.E004",
        )
    return value


def _paths(value: object) -> Iterable[str]:
    if isinstance(value, str):  # one path, not its characters
        return (value,)
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"EXEMPT must be a list of paths, not {value!r}")  # None
    return value


def _rule(value: object) -> Rule:
    if isinstance(value, Rule):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"each of RULES is a dict with PATH and ALLOWED_CALLERS (and METHODS), not {value!r}"
        )
    unknown = sorted(map(str, set(value) - _RULE_KEYS))
    if unknown or "PATH" not in value or "ALLOWED_CALLERS" not in value:
        raise ConfigurationError(
            f"a rule takes PATH, ALLOWED_CALLERS and optionally METHODS, not {sorted(value)}"
        )
    return Rule(value["PATH"], value["ALLOWED_CALLERS"], value.get("METHODS"))


def get_verifier() -> Verifier:
    """The :class:`~s2sauth.Verifier` that ``settings.S2SAUTH`` describes, shared by every adapter.

    Use it to fetch the keys at startup (``get_verifier().keyset.refresh()`` in an
    ``AppConfig.ready``), to read its ``stats``, or to verify a token by hand.

    Raises:
        ImproperlyConfigured: ``S2SAUTH`` is missing or invalid.
    """
    return _current_gate().verifier


def _authorization(request: HttpRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # request.META, not request.headers: building the headers mapping costs more than a
    # whole cached verification. Servers join repeated headers into one value.
    meta = request.META
    authorization = meta.get("HTTP_AUTHORIZATION")
    serverless = meta.get("HTTP_X_SERVERLESS_AUTHORIZATION")
    return (
        () if authorization is None else (authorization,),
        () if serverless is None else (serverless,),
    )


def _context(request: HttpRequest, gate: Gate) -> dict[str, Any]:
    # What the gate needs besides the bearer headers: IAP's assertion, and the paths a
    # push audience is built from (the full path, SCRIPT_NAME included, and the query).
    meta = request.META
    assertion = meta.get("HTTP_X_GOOG_IAP_JWT_ASSERTION") if gate.iap else None
    return {
        "assertion": () if assertion is None else (assertion,),
        "path": request.path_info,
        "query": meta.get("QUERY_STRING", ""),
        "url_path": request.path,
        "method": request.method or "GET",
    }


def _deny(gate: Gate, exc: S2SAuthError) -> HttpResponse:
    denial = gate.deny(exc)
    return HttpResponse(denial.body, status=denial.status, headers=dict(denial.headers))


def _accept(request: HttpRequest, gate: Gate, caller: Caller) -> None:
    request.caller = caller
    # The WSGI middleware's keys, so a decorator (or DRF) behind either one reuses the caller.
    meta = request.META
    meta[CALLER_KEY] = caller
    meta[VERIFIER_KEY] = gate.verifier_of(caller)


class IDTokenMiddleware:
    """Verify the ID token of every request before a view sees it.

    Use it to protect a whole Django service: add
    ``"s2sauth.django.IDTokenMiddleware"`` at the top of ``MIDDLEWARE`` and configure
    ``settings.S2SAUTH`` (see the module docstring). The verified
    :class:`~s2sauth.Caller` is ``request.caller``. Exempt paths and per-path rules
    are matched on ``request.path_info``. A rejection is answered here with 401, 403
    or 503, a short JSON body and the same headers as every other s2sauth adapter.

    It is both sync and async capable: under WSGI it runs synchronously, under ASGI
    as a coroutine (a key fetch runs off the event loop), so Django never has to
    switch modes around it.

    Threat model: whoever can reach the service can send any headers. Only a
    token signed by Google's published keys, for this service's audience, from an
    allowed caller gets through; the token is never logged or echoed. Put it first
    in ``MIDDLEWARE``, so no other middleware acts on an unauthenticated request.

    .. versionadded:: 0.2

    Args:
        get_response: the next middleware or the view, as Django passes it.

    Raises:
        ImproperlyConfigured: ``settings.S2SAUTH`` is missing or invalid (at startup).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        _current_gate()  # validate the settings now, not at the first request

    def __call__(self, request: HttpRequest) -> Any:
        """Check the request, then call the rest of the chain (or answer the rejection)."""
        if self.async_mode:
            return self.__acall__(request)
        gate = _current_gate()
        policy = gate.route(request.method or "GET", request.path_info)
        if policy is EXEMPT:
            return self.get_response(request)
        authorization, serverless = _authorization(request)
        try:
            caller = gate.authenticate(
                authorization, serverless, policy=policy, **_context(request, gate)
            )
        except S2SAuthError as exc:
            return _deny(gate, exc)
        _accept(request, gate, caller)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        """:meth:`__call__` for an async middleware chain."""
        gate = _current_gate()
        policy = gate.route(request.method or "GET", request.path_info)
        if policy is EXEMPT:
            return await self.get_response(request)
        authorization, serverless = _authorization(request)
        caller = gate.recall(authorization, serverless, policy)
        if caller is None:
            try:
                caller = await gate.aauthenticate(
                    authorization, serverless, policy=policy, **_context(request, gate)
                )
            except S2SAuthError as exc:
                return _deny(gate, exc)
        _accept(request, gate, caller)
        return await self.get_response(request)


def _verified(request: HttpRequest, gate: Gate) -> Caller | None:
    # A caller the middleware (this one or s2sauth.wsgi's) verified with the same verifier.
    meta = request.META
    caller = meta.get(CALLER_KEY)
    if isinstance(caller, Caller) and meta.get(VERIFIER_KEY) in (gate.verifier, gate.iap):
        return caller
    return None


def _check(request: HttpRequest, policy: CallerPolicy | None) -> HttpResponse | None:
    gate = _current_gate()
    try:
        caller = _verified(request, gate)
        if caller is not None:
            caller = gate.authorize(caller, policy or gate.default)
        else:
            authorization, serverless = _authorization(request)
            caller = gate.authenticate(
                authorization, serverless, policy=policy or gate.default, **_context(request, gate)
            )
    except S2SAuthError as exc:
        return _deny(gate, exc)
    _accept(request, gate, caller)
    return None


async def _acheck(request: HttpRequest, policy: CallerPolicy | None) -> HttpResponse | None:
    gate = _current_gate()
    try:
        caller = _verified(request, gate)
        if caller is not None:
            caller = gate.authorize(caller, policy or gate.default)
        else:
            authorization, serverless = _authorization(request)
            policy = policy or gate.default
            caller = gate.recall(authorization, serverless, policy) or await gate.aauthenticate(
                authorization, serverless, policy=policy, **_context(request, gate)
            )
    except S2SAuthError as exc:
        return _deny(gate, exc)
    _accept(request, gate, caller)
    return None


def _is_async(view: Callable[..., Any]) -> bool:
    if iscoroutinefunction(view):
        return True
    # method_decorator hands us partial(bound dispatch): the class knows whether it is async.
    bound = getattr(view, "func", None)
    instance = getattr(bound, "__self__", None)
    return bool(getattr(instance, "view_is_async", False))


def _decorator(policy: CallerPolicy | None) -> Callable[[V], V]:
    def decorate(view: V) -> V:
        if isinstance(view, type):  # a class-based view: guard its dispatch()
            from django.utils.decorators import method_decorator

            decorated: V = method_decorator(decorate, name="dispatch")(view)
            return decorated
        if _is_async(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Response:
                denied = await _acheck(request, policy)
                if denied is not None:
                    return denied
                return await view(request, *args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Response:
            denied = _check(request, policy)
            if denied is not None:
                return denied
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


@overload
def require_id_token(allowed_callers: V, /) -> V: ...


@overload
def require_id_token(
    allowed_callers: Iterable[str] | CallerPolicy | None = None,
) -> Callable[[V], V]: ...


def require_id_token(
    allowed_callers: Iterable[str] | CallerPolicy | Callable[..., Any] | None = None,
) -> Any:
    """Decorate a view so it runs only for a verified, allowed caller.

    Use it to protect some views of a Django service (protect all of them with
    :class:`IDTokenMiddleware`). It works on function views and class-based views
    (decorate the class, or use ``method_decorator(require_id_token(), name="dispatch")``),
    sync and ``async def`` alike, with or without parentheses. The caller is
    ``request.caller``. A rejection is answered with 401, 403 or 503, as the
    middleware answers. Behind the middleware the caller it verified is reused;
    only this view's allow-list is then applied.

    .. versionadded:: 0.2

    Args:
        allowed_callers: this view's allow-list; ``None`` keeps ``S2SAUTH["ALLOWED_CALLERS"]``.

    Raises:
        ImproperlyConfigured: an invalid allow-list (at decoration time).
    """
    if callable(allowed_callers) and not isinstance(allowed_callers, CallerPolicy):
        return _decorator(None)(allowed_callers)  # bare @require_id_token
    policy = None
    if allowed_callers is not None:
        try:
            policy = (
                allowed_callers
                if isinstance(allowed_callers, CallerPolicy)
                else CallerPolicy(allowed_callers)
            )
        except ConfigurationError as exc:
            raise ImproperlyConfigured(f"require_id_token: {exc.message}") from exc
    return _decorator(policy)


# -- system checks -------------------------------------------------------------------------


@checks.register("s2sauth")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Django system check: ``settings.S2SAUTH`` is present, complete and consistent."""
    try:
        gate = _current_gate()
    except _SettingsError as exc:
        return [checks.Error(str(exc), id=exc.check_id)]
    found: list[checks.CheckMessage] = []
    config = getattr(settings, SETTING)
    if (
        "ALLOWED_CALLERS" not in config
        and "VERIFIER" not in config
        and not config.get("TRUST_CLOUD_RUN_IAM")
    ):
        found.append(
            checks.Warning(
                f"settings.{SETTING} has no ALLOWED_CALLERS: any caller with a valid Google ID "
                "token for this audience gets in",
                hint="List the callers' service accounts, or set ALLOWED_CALLERS to None "
                "to accept any caller on purpose.",
                id="s2sauth.W001",
            )
        )
    for rule in gate.routes.rules:
        method = "GET" if rule.methods is None else min(rule.methods)
        if gate.route(method, rule.path) is EXEMPT:
            found.append(
                checks.Warning(
                    f"settings.{SETTING}: the rule for {rule.path} never applies there, "
                    "the path is EXEMPT (exempt paths are served without any token)",
                    hint="Remove the path from EXEMPT, or drop the rule.",
                    id="s2sauth.W002",
                )
            )
    return found
