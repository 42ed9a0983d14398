"""The inbound core: :class:`Verifier` turns a bearer token into a :class:`~s2sauth.Caller`.

One verification runs, in order: the verified-token cache (a hit re-checks only
the time); strict syntax and header checks (:mod:`.jws`); the key for ``kid``
(:mod:`.keys`); the signature; the claims (:mod:`.claims`); then, in
:meth:`Verifier.verify`, the caller policy (:mod:`.policy`), which is applied on
every call and never cached.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar
from urllib.parse import urlsplit

from .. import _log, _otel
from .._check import non_empty_strings
from .._errors import (
    AudienceMismatchError,
    CallerNotAllowedError,
    ConfigurationError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidTokenError,
    KeyFetchError,
    MissingTokenError,
    S2SAuthError,
    SignatureRemovedError,
)
from .._http import Transport, wait_future
from . import jws
from .audience import CloudRunAudience, PushAudience
from .caller import Caller
from .claims import ClaimRules, caller_from_claims, validate
from .keys import CERTS_URL_ENV, GOOGLE_CERTS_URL, KeySet
from .policy import CallerPolicy

__all__ = [
    "CERTS_URL_ENV",
    "GOOGLE_CERTS_URL",
    "GOOGLE_ISSUERS",
    "MAX_LEEWAY",
    "Verifier",
    "VerifierStats",
]

logger = logging.getLogger("s2sauth")

#: The ``iss`` values of Google-signed ID tokens.
GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")
#: Largest accepted leeway, in seconds: more would keep expired tokens alive.
MAX_LEEWAY: Final = 60.0

#: One audience a :class:`Verifier` accepts: a string, or one it works out.
Audience: TypeAlias = "str | PushAudience | CloudRunAudience"

_V = TypeVar("_V", bound="Verifier")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_announced_urls: set[str] = set()


@dataclass(frozen=True)
class VerifierStats:
    """A snapshot of a :class:`Verifier`'s counters.

    Attributes:
        verified: tokens that passed every check (cache hits included); a caller the
            policy then refused is in ``rejected_by_reason["caller_not_allowed"]`` too.
        rejected_by_reason: rejections counted by error ``reason``
            (``"expired"``, ``"caller_not_allowed"``, ``"keys_unavailable"``...).
        cache_hits: tokens answered from the verified-token cache.
        key_fetches: key-set fetches started by the verifier's :class:`KeySet`.
    """

    verified: int
    rejected_by_reason: Mapping[str, int]
    cache_hits: int
    key_fetches: int


class _Verified(NamedTuple):
    caller: Caller
    exp: int
    not_before: int
    kid: str | None  # the key that verified it; None when Cloud Run removed the signature


class Verifier:
    """Checks Google-signed ID tokens and the caller allow-list: the heart of every inbound adapter.

    Use one per service (it holds the key cache and the verified-token cache)
    and share it between threads and tasks. The constructor does no I/O: the
    keys are fetched on first use. It is a context manager: ``with
    Verifier(...) as verifier:`` closes the key set's connections on the way
    out, as :meth:`close` does.

    Threat model: every token is attacker input. It is parsed strictly before
    any cryptography; the algorithm comes from ``algorithms`` and the key, never
    from the token; the keys come only from ``certs_url``; issuer, audience and
    times are checked with an explicit leeway; and when no keys can be had,
    every token is refused (:class:`~s2sauth.KeyFetchError`, HTTP 503). Tokens
    never appear in logs or messages. The verified-token cache is keyed by the
    exact token and re-checks ``exp``/``nbf`` on every hit; the caller policy is
    applied on every call.

    Args:
        audience: the audience (or audiences) tokens must be issued for, usually
            the service's URL as callers address it (``https://svc-xyz.a.run.app``).
            Besides strings: a :class:`~s2sauth.verify.audience.PushAudience`
            (base URL + the request's path, for push deliveries) and a
            :class:`~s2sauth.verify.audience.CloudRunAudience` (this service on
            Cloud Run, resolved on first use). A string with a path or a
            trailing slash is logged at WARNING: Cloud Run's audience is the origin.
        allowed_callers: who may call: emails, numeric unique IDs or
            ``*@PROJECT.iam.gserviceaccount.com`` (see :class:`CallerPolicy`).
            ``None`` accepts any caller with a valid token (logged at WARNING,
            unless ``trust_cloud_run_iam``, where IAM decides who may invoke).
        certs_url: the keys endpoint; when ``None``, the ``S2SAUTH_CERTS_URL``
            environment variable, else Google's.
        issuers: accepted ``iss`` values.
        leeway: seconds of clock skew tolerated on ``exp``, ``iat`` and ``nbf``,
            0 to 60. The default, 30 s, absorbs ordinary drift between hosts.
        algorithms: accepted signature algorithms; Google signs with RS256.
        clock: returns the current time in seconds since the epoch (inject one in tests).
        cache_size: how many verified tokens to remember; 0 disables the cache.
        trust_cloud_run_iam: accept tokens whose signature Cloud Run replaced by
            ``SIGNATURE_REMOVED_BY_GOOGLE`` after checking it. Only for a service
            deployed with IAM invoker checks (``--no-allow-unauthenticated``):
            anyone who can reach the service directly could forge such a token.
            Claims and the caller policy are still checked.
        keyset: a key set to use (and perhaps share); built from ``certs_url``,
            ``transport``, ``clock`` and ``algorithms`` when ``None``.
        transport: performs the key fetches (see :class:`KeySet`).

    Raises:
        ConfigurationError: an empty audience, a leeway outside 0-60 s, a bad
            allow-list entry, an unsupported algorithm, a bad URL or cache size.

    .. versionadded:: 0.1
    """

    # What subclasses for other token kinds (s2sauth.iap) change.
    _default_keys_url: str = GOOGLE_CERTS_URL
    _keys_url_env: str = CERTS_URL_ENV
    _token_kind: str = "Google ID token"
    _allow_list_hint: str = "allowed_callers=[...]"
    #: The request header this verifier's tokens arrive in; ``None``: the bearer
    #: headers (``Authorization``, ``X-Serverless-Authorization``).
    token_header: str | None = None

    def __init__(
        self,
        audience: str
        | PushAudience
        | CloudRunAudience
        | Iterable[str | PushAudience | CloudRunAudience],
        *,
        allowed_callers: Iterable[str] | CallerPolicy | None = None,
        certs_url: str | None = None,
        issuers: Iterable[str] = GOOGLE_ISSUERS,
        leeway: float = 30.0,
        algorithms: Iterable[str] = ("RS256",),
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        trust_cloud_run_iam: bool = False,
        keyset: KeySet | None = None,
        transport: Transport | None = None,
    ) -> None:
        audiences, pushes, pending = _audiences(audience)
        issuer_set = non_empty_strings("issuers", issuers)
        if isinstance(leeway, bool) or not isinstance(leeway, int | float):
            raise ConfigurationError(f"leeway must be a number of seconds, not {leeway!r}")
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ConfigurationError(
                f"leeway must be between 0 and {MAX_LEEWAY:g} seconds, not {leeway!r}"
            )
        chosen_algorithms = frozenset(non_empty_strings("algorithms", algorithms))
        unsupported = chosen_algorithms - jws.SUPPORTED_ALGORITHMS
        if unsupported:
            raise ConfigurationError(
                f"unsupported algorithm(s) {sorted(unsupported)!r}; choose from "
                f"{sorted(jws.SUPPORTED_ALGORITHMS)!r}"
            )
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigurationError(f"cache_size must be an integer >= 0, not {cache_size!r}")
        self._policy = None if allowed_callers is None else _policy(allowed_callers)
        self._own_keyset = keyset is None
        if keyset is None:
            keyset = KeySet(
                _certs_url(certs_url, self._default_keys_url, self._keys_url_env),
                transport=transport,
                clock=clock,
                algorithms=chosen_algorithms,
            )
        elif certs_url is not None or transport is not None:
            raise ConfigurationError("pass certs_url and transport to the KeySet, not both")
        elif not chosen_algorithms <= keyset.algorithms:
            raise ConfigurationError(
                f"the key set holds keys for {sorted(keyset.algorithms)!r} only; build it with "
                f"algorithms={sorted(chosen_algorithms)!r}"
            )
        self._keyset = keyset
        self._rules = ClaimRules(
            issuers=frozenset(issuer_set),
            audiences=frozenset(audiences),
            leeway=float(leeway),
            audience_bases=tuple(push.base_url for push in pushes),
        )
        self._pushes = pushes
        self._pending = pending
        self._resolving = threading.Lock()
        self._algorithms = chosen_algorithms
        self._leeway = float(leeway)
        self._clock = clock
        self._trust_iam = bool(trust_cloud_run_iam)
        # A plain OrderedDict under our lock is the LRU (we need the lock anyway): with
        # cachetools.LRUCache instead, a repeated token cost 1.44 us against 1.27 us
        # (+13 %, bench_verify, best of 3 runs), so cachetools is no dependency.
        self._cache: OrderedDict[str, _Verified] | None = OrderedDict() if cache_size else None
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._verified = 0
        self._hits = 0
        self._rejected: Counter[str] = Counter()
        self._refusal_log = _log.RefusalLog()
        for value in audiences:
            _warn_about_audience(value)
        if allowed_callers is None and not trust_cloud_run_iam:
            logger.warning(
                "%s for %s has no allow-list: any caller with a valid %s for this audience "
                "is accepted; pass %s to restrict it",
                type(self).__name__,
                " and ".join(sorted(audiences) + [repr(a) for a in (*pushes, *pending)]),
                self._token_kind,
                self._allow_list_hint,
            )

    def __repr__(self) -> str:
        audiences = sorted(self._rules.audiences)
        return f"Verifier(audience={audiences!r}, keyset={self._keyset!r})"

    def close(self) -> None:
        """Close the key set's idle connections, if this verifier made the key set.

        The verifier stays usable: a later fetch opens a new connection.
        """
        if self._own_keyset:
            self._keyset.close()

    def __enter__(self: _V) -> _V:
        """The verifier itself; leaving the ``with`` block calls :meth:`close`."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def policy(self) -> CallerPolicy | None:
        """The allow-list :meth:`verify` applies by default (``None``: any valid caller)."""
        return self._policy

    @property
    def keyset(self) -> KeySet:
        """The key set tokens are checked against."""
        return self._keyset

    @property
    def audiences(self) -> frozenset[str]:
        """The exact audiences tokens may be issued for (a :class:`CloudRunAudience`
        counts once resolved; :attr:`request_audiences` are matched per request)."""
        return self._rules.audiences

    @property
    def request_audiences(self) -> tuple[PushAudience, ...]:
        """The push audiences, matched against each request's path and query."""
        return self._pushes

    def resolve_audiences(self) -> frozenset[str]:
        """Work out the :class:`CloudRunAudience` audiences now (blocking); the audiences.

        Use it at startup, so a service that cannot tell its own audience stops
        with a clear error instead of answering 503. Without it, the first token
        resolves them; then a failure is a 503 for that request (and logged).

        Raises:
            ConfigurationError: not on Cloud Run, or the metadata server did not answer.
        """
        with self._resolving:
            if self._pending:
                resolved = [value for pending in self._pending for value in pending.resolve()]
                rules = self._rules
                self._rules = ClaimRules(
                    issuers=rules.issuers,
                    audiences=rules.audiences | frozenset(resolved),
                    leeway=rules.leeway,
                    max_lifetime=rules.max_lifetime,
                    audience_bases=rules.audience_bases,
                )
                self._pending = ()
        return self._rules.audiences

    async def aresolve_audiences(self) -> frozenset[str]:
        """Like :meth:`resolve_audiences`, off the event loop."""
        future: concurrent.futures.Future[frozenset[str]] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(self.resolve_audiences())
            except BaseException as exc:  # handed to the waiting task
                future.set_exception(exc)

        threading.Thread(target=run, name="s2sauth-audience", daemon=True).start()
        return await wait_future(future)

    def _unresolved(self, exc: ConfigurationError) -> KeyFetchError:
        logger.error("this service's own audience is unknown: %s", exc.message)
        return KeyFetchError("this service's own audience is unknown; see the log")

    def check_request(self, caller: Caller, *, path: str | None, query: str = "") -> Caller:
        """Check a caller's audience against the request, for push audiences.

        A token whose ``aud`` is one of :attr:`audiences` passes as it is; one
        accepted under a :class:`PushAudience` base must be for exactly this
        request's URL: base + ``path`` (+ ``?query``). Adapters call it through
        the gate; :meth:`verify` calls it when given ``path``.

        Args:
            caller: from :meth:`authenticate`.
            path: the request's path from the root of the URL, percent-decoded;
                ``None`` when unknown, which refuses a push token.
            query: the raw query string, without ``?``.

        Raises:
            AudienceMismatchError: the token is for another URL (HTTP 401).
        """
        if not self._pushes or caller.audience in self._rules.audiences:
            return caller
        if path is not None and any(
            push.accepts(caller.audience, path, query) for push in self._pushes
        ):
            return caller
        refusal = AudienceMismatchError(
            "the token is for another URL than this request's"
            if path is not None
            else "the token's audience is a push URL, and the request's path is unknown"
        )
        self.record_rejection(refusal)
        raise refusal

    @property
    def stats(self) -> VerifierStats:
        """Counters: tokens verified, rejections by reason, cache hits, key fetches."""
        with self._lock:
            verified, hits, rejected = self._verified, self._hits, dict(self._rejected)
        return VerifierStats(verified, rejected, hits, self._keyset.stats.fetches)

    def warm(self) -> None:
        """Fetch the verification keys now, so that the first request pays no fetch.

        Use it at startup (Cloud Run cold starts): in a WSGI app's module, Django's
        ``AppConfig.ready``, before a gRPC server starts. The ASGI middleware calls
        :meth:`awarm` on lifespan startup by itself.

        Raises:
            KeyFetchError: the keys could not be fetched (a request will try again).

        .. versionadded:: 0.2
        """
        self._keyset.refresh()

    async def awarm(self) -> None:
        """Like :meth:`warm`, without blocking the event loop."""
        await self._keyset.arefresh()

    def verify(
        self,
        token: str,
        *,
        allowed_callers: CallerPolicy | Iterable[str] | None = None,
        path: str | None = None,
        query: str = "",
    ) -> Caller:
        """Check ``token`` and the caller policy; the caller it identifies.

        Args:
            token: the bearer token, without the ``Bearer`` prefix.
            allowed_callers: the allow-list for this call instead of the verifier's.
            path: the request's path, for push audiences (see :meth:`check_request`).
            query: the request's raw query string, for push audiences.

        Raises:
            InvalidTokenError: the token is not acceptable (a subclass names why).
            CallerNotAllowedError: the token is valid, its caller not allowed.
            KeyFetchError: no verification keys can be had.
        """
        caller = self.check_request(self.authenticate(token), path=path, query=query)
        return self.authorize(caller, allowed_callers)

    async def averify(
        self,
        token: str,
        *,
        allowed_callers: CallerPolicy | Iterable[str] | None = None,
        path: str | None = None,
        query: str = "",
    ) -> Caller:
        """Like :meth:`verify`; a key fetch, if one is needed, runs off the event loop."""
        caller = await self.aauthenticate(token)
        return self.authorize(self.check_request(caller, path=path, query=query), allowed_callers)

    def authorize(
        self, caller: Caller, allowed_callers: CallerPolicy | Iterable[str] | None = None
    ) -> Caller:
        """Apply a caller policy to ``caller``; a refusal is counted and logged like any other.

        Use it after :meth:`authenticate`, to apply a policy chosen per request (a
        route's allow-list): adapters do. :meth:`verify` is both steps in one.

        Args:
            caller: from :meth:`authenticate`.
            allowed_callers: the allow-list to apply; ``None`` applies the verifier's
                own (:attr:`policy`), which itself may be ``None``: any caller.

        Raises:
            CallerNotAllowedError: the caller is not allowed (HTTP 403).
        """
        policy = self._policy if allowed_callers is None else _policy(allowed_callers)
        if policy is not None:
            try:
                policy.check(caller)
            except CallerNotAllowedError as exc:
                self.record_rejection(exc)
                raise
        return caller

    def authenticate(self, token: str) -> Caller:
        """Check ``token`` only, without any caller policy (then :meth:`authorize`).

        With push audiences, a token for any URL under a push base passes here:
        :meth:`check_request` then matches it to the request.

        Raises:
            InvalidTokenError: the token is not acceptable.
            KeyFetchError: no verification keys can be had.
        """
        now = self._clock()
        try:
            cached = self._cached(token, now)
            if cached is not None:
                return cached
            if self._pending:
                try:
                    self.resolve_audiences()
                except ConfigurationError as exc:
                    raise self._unresolved(exc) from None
            parsed = self._parse(token)
            key = None if parsed.signature_removed else self._keyset.get(parsed.kid)
            return self._complete(token, parsed, key, now)
        except (InvalidTokenError, KeyFetchError) as exc:
            self.record_rejection(exc)
            raise

    async def aauthenticate(self, token: str) -> Caller:
        """Like :meth:`authenticate`; a key fetch, if one is needed, runs off the event loop."""
        now = self._clock()
        try:
            cached = self._cached(token, now)
            if cached is not None:
                return cached
            if self._pending:
                try:
                    await self.aresolve_audiences()
                except ConfigurationError as exc:
                    raise self._unresolved(exc) from None
            parsed = self._parse(token)
            key = None if parsed.signature_removed else await self._keyset.aget(parsed.kid)
            return self._complete(token, parsed, key, now)
        except (InvalidTokenError, KeyFetchError) as exc:
            self.record_rejection(exc)
            raise

    def recall(self, token: str, policy: CallerPolicy | None = None) -> Caller | None:
        """The caller of ``token`` if this verifier let it in before and would again now.

        The shortcut adapters try before :meth:`authenticate`: a look-up in the
        verified-token cache that answers only when the full check would let the
        caller in (token current, its key still published, ``policy`` allows it),
        and never raises, logs or fetches. ``None`` means "take the full way",
        which decides, counts and logs whatever the answer is. A hit counts as a
        verification, as :meth:`authenticate` counts its cache hits.

        Args:
            token: the bearer token, without the ``Bearer`` prefix.
            policy: the allow-list the request must pass; ``None``: any caller.

        .. versionadded:: 0.2
        """
        cache = self._cache
        if cache is None or self._pending:
            return None
        now = self._clock()
        leeway = self._leeway
        self._lock.acquire()
        try:
            entry = cache.get(token)
            if (
                entry is None
                or not (now < entry.exp + leeway and entry.not_before <= now + leeway)
                or not (entry.kid is None or self._keyset.holds(entry.kid, now))
                or not (policy is None or policy.allows(entry.caller))
            ):
                return None
            cache.move_to_end(token)
            self._hits += 1
            self._verified += 1
        finally:
            self._lock.release()
        if _otel.active is not None:
            _otel.accepted(cache_hit=True)
        return entry.caller

    def _cached(self, token: str, now: float) -> Caller | None:
        cache = self._cache
        if cache is None or type(token) is not str:
            return None
        leeway = self._leeway
        # acquire/release rather than `with`: a repeated token costs 1.27 us this way and
        # 1.41 us with `with` (+11 %, bench_verify, best of 3 runs).
        self._lock.acquire()
        try:
            entry = cache.get(token)
            if entry is None:
                return None
            current = now < entry.exp + leeway and entry.not_before <= now + leeway
            # A hit is worth no more than its key: retired, or past its stale grace,
            # the token is checked again against the keys as they are.
            if current and (entry.kid is None or self._keyset.holds(entry.kid, now)):
                cache.move_to_end(token)
                self._hits += 1
                self._verified += 1
                if _otel.active is not None:
                    _otel.accepted(cache_hit=True)
                return entry.caller
            del cache[token]
        finally:
            self._lock.release()
        if current:
            return None
        if now >= entry.exp + leeway:
            raise ExpiredTokenError(
                f"the token expired {now - entry.exp:.0f} s ago (leeway {leeway:g} s); "
                "the caller must fetch a fresh token"
            )
        raise ImmatureTokenError("the token is not valid yet; check the clocks")

    def _parse(self, token: str) -> jws.CompactJWS:
        if not token:
            raise MissingTokenError("no token was given")
        parsed = jws.parse(token, self._algorithms)
        if parsed.signature_removed and not self._trust_iam:
            raise SignatureRemovedError(
                "the token's signature was removed by Cloud Run (SIGNATURE_REMOVED_BY_GOOGLE); "
                "send it in Authorization instead, or, if the service is deployed with IAM "
                "invoker checks, set trust_cloud_run_iam=True"
            )
        return parsed

    def _complete(
        self, token: str, parsed: jws.CompactJWS, key: jws.PublicKey | None, now: float
    ) -> Caller:
        if key is not None:
            jws.verify_signature(parsed, key)
        claims = parsed.payload
        validate(claims, now, self._rules)
        caller = self._caller_from_claims(claims)
        not_before = max(claims["iat"], claims.get("nbf", 0))
        kid = None if key is None else parsed.kid
        entry = _Verified(caller, claims["exp"], not_before, kid)
        if _otel.active is not None:
            _otel.accepted(cache_hit=False)
        with self._lock:
            self._verified += 1
            cache = self._cache
            if cache is not None:
                cache[token] = entry
                if len(cache) > self._cache_size:
                    cache.popitem(last=False)
        return caller

    def _caller_from_claims(self, claims: dict[str, Any]) -> Caller:
        # The one step a verifier of another token kind (s2sauth.iap) does its own way.
        return caller_from_claims(claims)

    def record_rejection(self, exc: S2SAuthError) -> None:
        """Count and log a refusal, as the verifier does for each one it decides.

        Adapters call it for a request refused before its token reaches
        :meth:`authenticate` (no token, or unusable authorization headers), so
        :attr:`stats` and the log cover every refused request. The log line, at
        INFO, gives the reason and the message, never a token.

        Args:
            exc: the error the request is refused with.
        """
        with self._lock:
            self._rejected[exc.reason] += 1
        # The one INFO line of a rejected request (rate-limited, see s2sauth._log). INFO
        # even for missing keys: the key set itself says so once at WARNING.
        self._refusal_log(exc)
        _otel.refused(exc)


def _policy(allowed: CallerPolicy | Iterable[str]) -> CallerPolicy:
    return allowed if isinstance(allowed, CallerPolicy) else CallerPolicy(allowed)


def _audiences(
    audience: object,
) -> tuple[tuple[str, ...], tuple[PushAudience, ...], tuple[CloudRunAudience, ...]]:
    chosen = (
        (audience,)
        if isinstance(audience, str | PushAudience | CloudRunAudience)
        else tuple(audience)
        if isinstance(audience, Iterable)
        else ()
    )
    strings = tuple(value for value in chosen if isinstance(value, str))
    pushes = tuple(value for value in chosen if isinstance(value, PushAudience))
    pending = tuple(value for value in chosen if isinstance(value, CloudRunAudience))
    if not chosen or len(strings) + len(pushes) + len(pending) != len(chosen) or "" in strings:
        raise ConfigurationError(
            "audience must be one or more non-empty strings, PushAudience or "
            f"CloudRunAudience, not {audience!r}"
        )
    return strings, pushes, pending


def _warn_about_audience(audience: str) -> None:
    parts = urlsplit(audience)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return  # a custom audience: any string will do
    # Callers (s2sauth, gcloud, Google's libraries) ask Cloud Run services for the origin;
    # push senders ask for the full URL, which PushAudience matches per request.
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.path == "/" and not parts.query:
        logger.warning(
            "the audience %r ends with a slash: callers asking for the service URL %r, as "
            "Cloud Run's callers do, will get 401 audience_mismatch; drop the slash",
            audience,
            origin,
        )
    elif parts.path or parts.query:
        logger.warning(
            "the audience %r has a path: callers asking for the service URL %r will get 401 "
            "audience_mismatch; if this is a push endpoint's URL on purpose, use "
            "PushAudience(base URL) to match each request's own URL",
            audience,
            origin,
        )


def _certs_url(
    certs_url: str | None, default: str = GOOGLE_CERTS_URL, env: str = CERTS_URL_ENV
) -> str:
    url = certs_url or os.environ.get(env) or default
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"certs_url must be an http(s) URL, not {url!r}")
    if url != default and url not in _announced_urls:
        _announced_urls.add(url)
        source = f" (from ${env})" if certs_url is None else ""
        logger.info("verifying tokens with keys from %s%s, not Google's", url, source)
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            logger.warning(
                "the keys URL %s is plain http: anyone on the network path could substitute "
                "keys and forge tokens; use https",
                url,
            )
    return url
