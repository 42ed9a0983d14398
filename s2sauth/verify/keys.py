"""The key set: Google's published verification keys, fetched and cached safely.

:class:`KeySet` answers "which key has this ``kid``?" from memory almost always,
and fetches the published keys only when it must:

* **Cache.** The keys live as long as the endpoint's ``Cache-Control: max-age``
  minus its ``Age`` says, clamped to ``[min_ttl, max_ttl]`` (``default_ttl`` when
  the reply says nothing; ``min_ttl`` for ``no-cache``/``no-store``).
* **Refresh ahead.** In the last tenth of that lifetime (at most the last minute)
  the current keys keep serving while one background fetch replaces them, so no
  request waits for the network in the ordinary course.
* **Single flight.** However many threads and tasks need keys at once, one fetch
  runs and all of them share its outcome.
* **Unknown kid.** A token naming a key not in the set causes one refetch (Google
  publishes a new key before signing with it, and rotation must not need a
  restart), but at most one per ``unknown_kid_cooldown`` seconds: a flood of
  tokens with random ``kid`` values costs at most one fetch per cooldown.
* **Degraded.** When fetches fail, the last good keys keep serving until
  ``stale_grace`` after their expiry (logged once at WARNING); fetches are not
  retried more often than every ``failure_backoff`` seconds meanwhile.
* **Fail closed.** With no keys at all (never fetched, or stale beyond the
  grace) every lookup raises :class:`~s2sauth.KeyFetchError` (HTTP 503), never
  lets a token through.

Both formats Google publishes are understood, told apart by shape: the JWKS of
``https://www.googleapis.com/oauth2/v3/certs`` and the ``{kid: PEM certificate}``
map of ``https://www.googleapis.com/oauth2/v1/certs``. Key hygiene applies to
each entry: RSA keys of 2048 to 8192 bits with exponent 65537 (or P-256 keys
when ES256 is configured); a JWK whose ``alg``, ``use`` or ``key_ops`` does not
allow verification with a configured algorithm is skipped; keys sharing a
``kid`` are all skipped. A bad entry is logged and skipped; the rest still serve.

The fetch goes over the proxy-free :class:`~s2sauth._http.HTTPTransport`, two
attempts at most within ``timeout``, paced and judged like every other fetch
(:mod:`s2sauth._retry`); async callers wait for it off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .. import _otel
from .._errors import ConfigurationError, KeyFetchError, UnknownKeyError
from .._flight import KEYS, SingleFlight
from .._http import (
    HTTPRequest,
    HTTPResponse,
    HTTPTransport,
    Transport,
    TransportError,
    wait_future,
)
from .._retry import Backoff, is_retryable_status
from .jws import SUPPORTED_ALGORITHMS, PublicKey

__all__ = ["MIN_RSA_BITS", "KeySet", "KeySetStats", "parse_key_set"]

logger = logging.getLogger("s2sauth")

#: Google's published ID-token signing keys, as a JWKS.
GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v3/certs"
#: Environment variable naming another keys URL (such as the emulator's) when
#: ``certs_url`` is not given.
CERTS_URL_ENV: Final = "S2SAUTH_CERTS_URL"
#: Smallest RSA modulus used, in bits (NIST SP 800-131A; Google's keys are 2048).
MIN_RSA_BITS: Final = 2048
_MAX_RSA_BITS = 8192
_RSA_EXPONENT = 65537
# Number of HTTP attempts per fetch, all within the fetch's timeout.
_ATTEMPTS = 2
# Refresh ahead of expiry in the last tenth of the lifetime, but never earlier
# than the last minute.
_REFRESH_FRACTION = 0.1
_REFRESH_WINDOW = 60.0
_FETCH = "keys"
# A JWK integer: base64url, padding tolerated (RFC 7518 omits it).
_B64URL_VALUE = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@dataclass(frozen=True)
class KeySetStats:
    """A snapshot of a :class:`KeySet`'s counters.

    Attributes:
        fetches: key-set fetches started (each makes up to two HTTP requests).
        failures: fetches that failed.
        keys: usable keys held now.
        stale: whether the keys held have expired and are served within the grace.
    """

    fetches: int
    failures: int
    keys: int
    stale: bool


@dataclass(frozen=True)
class _Keys:
    keys: Mapping[str, PublicKey]
    expires_at: float
    refresh_at: float


class KeySet:
    """The verification keys published at ``certs_url``, cached and refreshed safely.

    Use the one a :class:`~s2sauth.verify.verifier.Verifier` makes; build one
    yourself to share a key cache between verifiers or to tune it. Constructing
    it does no I/O; the first lookup fetches.

    Threat model: the keys decide which tokens are genuine, so they come only
    from the configured URL (never from a token's ``jku``/``x5u``/``jwk``), over a
    proxy-free connection, and only keys that pass hygiene checks are used. An
    attacker who can send tokens can make the set refetch at most once per
    ``unknown_kid_cooldown``; an outage of the keys endpoint degrades to the last
    good keys for ``stale_grace`` and then fails closed.

    Args:
        certs_url: a JWKS or ``{kid: PEM}`` endpoint, such as Google's
            ``https://www.googleapis.com/oauth2/v3/certs``.
        transport: performs the HTTP request; a pooled ``http.client`` transport
            by default.
        clock: returns the current time in seconds since the epoch.
        algorithms: the algorithms keys must be usable with (``"RS256"``,
            ``"ES256"``); keys for nothing else are skipped.
        min_ttl: shortest time, in seconds, a fetched set is kept.
        max_ttl: longest time a fetched set is kept, whatever ``max-age`` says
            (one day: Google rotates keys every few days and publishes them early).
        default_ttl: how long a set is kept when the reply has no ``max-age``.
        unknown_kid_cooldown: least time between two refetches caused by
            unknown ``kid`` values.
        stale_grace: how long after their expiry the last good keys keep serving
            while fetches fail (six hours by default).
        failure_backoff: least time between two fetch attempts after a failure.
        timeout: total seconds one fetch may take, retry included.
        queue_slack: extra seconds a lookup waits for a fetch beyond ``timeout``,
            for the time the fetch may spend queued for a worker of a busy pool.
            A lookup gives up (503) after ``timeout + queue_slack`` whatever the
            fetch does, so a transport that ignores its timeout cannot hang requests.

    Raises:
        ConfigurationError: a bad URL, algorithm or duration.
    """

    def __init__(
        self,
        certs_url: str,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        algorithms: Collection[str] = ("RS256",),
        min_ttl: float = 60.0,
        max_ttl: float = 86_400.0,
        default_ttl: float = 300.0,
        unknown_kid_cooldown: float = 30.0,
        stale_grace: float = 6 * 3600.0,
        failure_backoff: float = 5.0,
        timeout: float = 5.0,
        queue_slack: float = 5.0,
    ) -> None:
        if not isinstance(certs_url, str) or not certs_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"certs_url must be an http(s) URL of a key set, not {certs_url!r}"
            )
        algorithms = _check_algorithms(algorithms)
        durations = {
            "min_ttl": min_ttl,
            "max_ttl": max_ttl,
            "default_ttl": default_ttl,
            "unknown_kid_cooldown": unknown_kid_cooldown,
            "stale_grace": stale_grace,
            "failure_backoff": failure_backoff,
            "timeout": timeout,
            "queue_slack": queue_slack,
        }
        for name, value in durations.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if timeout <= 0 or min_ttl <= 0:
            raise ConfigurationError("timeout and min_ttl must be more than 0 seconds")
        if not min_ttl <= default_ttl <= max_ttl:
            raise ConfigurationError("need min_ttl <= default_ttl <= max_ttl")
        self.certs_url = certs_url
        self.algorithms = algorithms
        self._own_transport: HTTPTransport | None = None
        if transport is None:
            transport = self._own_transport = HTTPTransport()
        self._transport = transport
        self._clock = clock
        self._min_ttl = float(min_ttl)
        self._max_ttl = float(max_ttl)
        self._default_ttl = float(default_ttl)
        self._cooldown = float(unknown_kid_cooldown)
        self._grace = float(stale_grace)
        self._backoff = float(failure_backoff)
        self._timeout = float(timeout)
        self._wait_limit = self._timeout + float(queue_slack)
        self._flight: SingleFlight[str, _Keys] = SingleFlight(pool_name=KEYS)
        self._lock = threading.Lock()
        self._keys: _Keys | None = None
        self._kid_refetch_at: float | None = None
        self._failed_at: float | None = None
        self._last_error: KeyFetchError | None = None
        self._failures_in_a_row = 0
        self._stale_warned = False
        self._fetches = 0
        self._failures = 0

    def __repr__(self) -> str:
        return f"KeySet({self.certs_url!r})"

    @property
    def stats(self) -> KeySetStats:
        """Counters: fetches, failures, keys held, whether they are stale."""
        current = self._keys
        with self._lock:
            return KeySetStats(
                fetches=self._fetches,
                failures=self._failures,
                keys=0 if current is None else len(current.keys),
                stale=current is not None and self._clock() >= current.expires_at,
            )

    def holds(self, kid: str, now: float) -> bool:
        """Whether the keys held include ``kid`` and may still be used at ``now``.

        What a cached verification is worth: once its key is no longer published
        (retired, or the keys are past their stale grace), the token must be
        checked again. It never fetches.
        """
        current = self._keys
        return (
            current is not None and now < current.expires_at + self._grace and (kid in current.keys)
        )

    @property
    def expires_at(self) -> float | None:
        """When the keys held expire, in seconds since the epoch (``None``: never fetched)."""
        current = self._keys
        return None if current is None else current.expires_at

    @property
    def kids(self) -> tuple[str, ...]:
        """The key IDs held now (empty before the first fetch)."""
        current = self._keys
        return () if current is None else tuple(sorted(current.keys))

    def get(self, kid: str) -> PublicKey:
        """The key for ``kid``, waiting for a fetch of the key set if it must.

        Raises:
            UnknownKeyError: no usable published key has this ``kid``.
            KeyFetchError: no keys can be had (HTTP 503).
        """
        now = self._clock()
        key = self._cached(kid, now)
        if key is not None:
            return key
        error = None
        fetch = self._plan(kid, now)
        if fetch is not None:
            try:
                fetch.result(timeout=self._wait_limit)
            except KeyFetchError as exc:
                error = exc
            except concurrent.futures.TimeoutError:
                error = KeyFetchError(f"fetching {self.certs_url} took too long")
        # Judged at the time the wait ended: a slow failing fetch may have used up the grace.
        return self._answer(kid, self._clock() if fetch is not None else now, error)

    async def aget(self, kid: str) -> PublicKey:
        """Like :meth:`get`; waiting for a fetch does not block the event loop (asyncio, trio)."""
        now = self._clock()
        key = self._cached(kid, now)
        if key is not None:
            return key
        error = None
        fetch = self._plan(kid, now)
        if fetch is not None:
            try:
                await wait_future(fetch, timeout=self._wait_limit)
            except KeyFetchError as exc:
                error = exc
            except TimeoutError:
                error = KeyFetchError(f"fetching {self.certs_url} took too long")
        # Judged at the time the wait ended: a slow failing fetch may have used up the grace.
        return self._answer(kid, self._clock() if fetch is not None else now, error)

    def refresh(self) -> None:
        """Fetch the key set now (joining a fetch already running).

        Use it to warm the cache at startup, or in a health check.

        Raises:
            KeyFetchError: the fetch failed; keys held before are kept.
        """
        self._flight.do(_FETCH, self._fetch)

    async def arefresh(self) -> None:
        """Like :meth:`refresh`, off the event loop."""
        await self._flight.ado(_FETCH, self._fetch)

    def close(self) -> None:
        """Close the idle connections of the transport this key set made (not one passed in)."""
        if self._own_transport is not None:
            self._own_transport.close()

    def _cached(self, kid: str, now: float) -> PublicKey | None:
        current = self._keys
        if current is None or now >= current.expires_at:
            return None
        if now >= current.refresh_at and not self._failed_recently(now):
            self._start_fetch()
        return current.keys.get(kid)

    def _failed_recently(self, now: float) -> bool:
        failed_at = self._failed_at
        # A clock stepped back (now before failed_at) must not stretch the backoff.
        return failed_at is not None and 0 <= now - failed_at < self._backoff

    def _plan(self, kid: str, now: float) -> concurrent.futures.Future[_Keys] | None:
        """The fetch this lookup must wait for, started if need be; ``None`` for none.

        Decided and started under the lock, so that concurrent lookups for a new
        kid all wait for the one refetch rather than being refused meanwhile.
        """
        with self._lock:
            current = self._keys
            if current is None or now >= current.expires_at + self._grace:
                return None if self._failed_recently(now) else self._start_fetch()
            if now >= current.expires_at:
                if not self._failures_in_a_row:
                    return self._start_fetch()
                # Degraded: answer from the stale keys at once, retry in the background.
                if not self._failed_recently(now):
                    self._start_fetch()
                return None
            if kid in current.keys:
                return None
            running = self._flight.running(_FETCH)
            if running is not None:
                return running
            # A fresh set without this kid: refetch at most once per cooldown.
            last = self._kid_refetch_at
            if last is not None and 0 <= now - last < self._cooldown:
                return None
            self._kid_refetch_at = now
            fetch = self._start_fetch()
        logger.info("no key %s in the key set from %s; fetching again", _show(kid), self.certs_url)
        return fetch

    def _start_fetch(self) -> concurrent.futures.Future[_Keys] | None:
        # The fetch runs on the shared worker pool; None when it has already finished.
        self._flight.start(_FETCH, self._fetch)
        return self._flight.running(_FETCH)

    def _answer(self, kid: str, now: float, error: KeyFetchError | None) -> PublicKey:
        current = self._keys
        error = error or self._last_error
        if current is not None and now < current.expires_at + self._grace:
            if now >= current.expires_at:
                self._warn_stale(current, error)
            key = current.keys.get(kid)
            if key is not None:
                return key
            raise UnknownKeyError(
                f"no usable key {_show(kid)} is published at {self.certs_url}; the token was "
                "signed by another issuer, or with a key that was retired"
            )
        retry_after = max(1, math.ceil(self._backoff))
        # The fetch's own message names the URL too: say it once.
        reason = f": {error.message.removeprefix(_cannot_fetch(self.certs_url))}" if error else ""
        if current is None:
            raise KeyFetchError(
                f"no verification keys could be fetched from {self.certs_url}{reason}; every "
                f"token is refused until they can ({self._fix_hint()})",
                retry_after=retry_after,
            )
        raise KeyFetchError(
            f"the verification keys from {self.certs_url} expired more than "
            f"{self._grace:g} s ago and could not be refreshed{reason}; every token is "
            "refused until the keys endpoint answers",
            retry_after=retry_after,
        )

    def _fix_hint(self) -> str:
        if self.certs_url == GOOGLE_CERTS_URL and not os.environ.get(CERTS_URL_ENV):
            # Google's keys by default, off Google's network (a laptop, CI, a sandbox).
            return (
                f"off Google Cloud, set {CERTS_URL_ENV} to the keys URL `s2sauth emulator` "
                "prints; else check that this service can reach the URL"
            )
        return "check that this service can reach the URL"

    def _warn_stale(self, current: _Keys, error: KeyFetchError | None) -> None:
        with self._lock:
            if self._stale_warned:
                return
            self._stale_warned = True
        logger.warning(
            "serving verification keys that expired at %s because %s cannot be fetched (%s); "
            "they keep serving for up to %g s after expiry",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.expires_at)),
            self.certs_url,
            "no reason recorded" if error is None else error.message,
            self._grace,
        )

    @_otel.traced("s2sauth.keys.fetch", "keys", lambda keyset: {"url.full": keyset.certs_url})
    def _fetch(self) -> _Keys:
        with self._lock:
            self._fetches += 1
        try:
            keys, ttl = self._download()
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, KeyFetchError)
                else KeyFetchError(f"fetching {self.certs_url} failed: {type(exc).__name__}: {exc}")
            )
            self._record_failure(error)
            raise error from exc
        now = self._clock()
        window = min(_REFRESH_WINDOW, ttl * _REFRESH_FRACTION)
        fresh = _Keys(keys, expires_at=now + ttl, refresh_at=now + ttl - window)
        with self._lock:
            self._keys = fresh
            failed_before = self._failures_in_a_row
            self._failures_in_a_row = 0
            self._failed_at = None
            self._last_error = None
            self._stale_warned = False
        if failed_before:
            logger.info(
                "fetched %d verification keys from %s again after %d failed attempt(s)",
                len(keys),
                self.certs_url,
                failed_before,
            )
        return fresh

    def _record_failure(self, error: KeyFetchError) -> None:
        with self._lock:
            self._failures += 1
            self._failures_in_a_row += 1
            self._failed_at = self._clock()
            self._last_error = error
            first = self._failures_in_a_row == 1
            have_keys = self._keys is not None
        if first:
            logger.warning(
                "%s%s",
                error.message,
                "; the keys fetched before keep serving" if have_keys else "",
            )

    def _download(self) -> tuple[dict[str, PublicKey], float]:
        backoff = Backoff(deadline=self._timeout, started=time.monotonic(), max_attempts=_ATTEMPTS)
        headers = {"Accept": "application/json", "User-Agent": "s2sauth"}
        while True:
            timeout = backoff.begin_attempt(time.monotonic(), self._timeout)
            try:
                response = self._transport(
                    HTTPRequest("GET", self.certs_url, headers, timeout=timeout)
                )
            except TransportError as exc:
                problem, retryable = f"{exc}", True
            else:
                if response.status == 200:
                    keys = parse_key_set(response.body, self.algorithms, source=self.certs_url)
                    return keys, self._ttl(response)
                problem = f"it answered HTTP {response.status}{_content_hint(response)}"
                retryable = is_retryable_status(response.status)
            delay = backoff.delay(time.monotonic(), random.random()) if retryable else None
            if delay is None:
                raise KeyFetchError(f"{_cannot_fetch(self.certs_url)}{problem}")
            time.sleep(delay)

    def _ttl(self, response: HTTPResponse) -> float:
        max_age = None
        for directive in (response.header("cache-control") or "").split(","):
            name, _, value = directive.strip().partition("=")
            name = name.lower()
            if name in ("no-cache", "no-store"):
                return self._min_ttl
            if name == "max-age":
                max_age = _seconds(value)
        if max_age is None:
            ttl = self._default_ttl
        else:
            ttl = max_age - (_seconds(response.header("age") or "") or 0)
        return min(max(ttl, self._min_ttl), self._max_ttl)


def parse_key_set(
    body: bytes, algorithms: Collection[str] = ("RS256",), *, source: str = "the keys endpoint"
) -> dict[str, PublicKey]:
    """The usable keys of a JWKS or ``{kid: PEM certificate}`` document, by ``kid``.

    Use it to check a key document by hand; :class:`KeySet` calls it on every fetch.
    Entries that fail hygiene are logged and skipped.

    Args:
        body: the document, JSON.
        algorithms: the algorithms keys must be usable with.
        source: where the document came from, for messages.

    Raises:
        KeyFetchError: the document is not a key set, or has no usable key.
    """
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_Members)
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    if not isinstance(document, _Members):
        looks_html = body.lstrip()[:1] == b"<"
        raise KeyFetchError(
            f"{source} did not answer with a JSON key set"
            + (" but with HTML (is the URL right? a proxy or login page?)" if looks_html else "")
            + "; expected a JWKS like https://www.googleapis.com/oauth2/v3/certs"
        )
    if "keys" in document.duplicates:
        raise KeyFetchError(f"{source} answered a JWKS with two 'keys' members")
    if isinstance(document.get("keys"), list):
        entries = [
            (entry.get("kid"), entry) for entry in document["keys"] if isinstance(entry, _Members)
        ]
        if len(entries) != len(document["keys"]):
            logger.warning("%s: skipped JWKS entries that are not JSON objects", source)
        load: Callable[[Any, frozenset[str]], PublicKey] = _load_jwk
    elif document and all(isinstance(value, str) for value in document.values()):
        entries = list(document.items())
        load = _load_pem
    else:
        raise KeyFetchError(
            f'{source} answered JSON that is neither a JWKS ({{"keys": [...]}}) nor a '
            "map of key IDs to PEM certificates"
        )
    allowed = _check_algorithms(algorithms)
    counts: dict[str, int] = {}
    for kid, _ in entries:
        if isinstance(kid, str):
            counts[kid] = counts.get(kid, 0) + 1
    keys: dict[str, PublicKey] = {}
    for kid, entry in entries:
        try:
            if not isinstance(kid, str) or not kid:
                raise _Skip("it has no kid")
            if counts[kid] > 1 or (load is _load_pem and kid in document.duplicates):
                raise _Skip("another key has the same kid")
            keys[kid] = load(entry, allowed)
        except _Skip as skip:
            logger.warning("%s: key %s not used: %s", source, _show(kid), skip)
    if not keys:
        raise KeyFetchError(f"{source} published no usable verification key")
    return keys


class _Members(dict[str, Any]):
    """A JSON object that remembers which member names it saw more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicates: frozenset[str] = frozenset()
        if len(self) != len(pairs):
            names = [name for name, _ in pairs]
            self.duplicates = frozenset(name for name in names if names.count(name) > 1)


class _Skip(Exception):
    pass


def _load_jwk(jwk: _Members, algorithms: frozenset[str]) -> PublicKey:
    if jwk.duplicates:
        raise _Skip(f"member(s) {', '.join(sorted(jwk.duplicates))} appear twice")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _Skip(f"its use is {_show(use)}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _Skip("its key_ops do not include 'verify'")
    kty = jwk.get("kty")
    if kty == "RSA":
        key: PublicKey = _rsa_key(_b64_int(jwk, "n"), _b64_int(jwk, "e"))
    elif kty == "EC":
        if jwk.get("crv") != "P-256":
            raise _Skip(f"its curve {_show(jwk.get('crv'))} is not P-256")
        x, y = _b64_int(jwk, "x"), _b64_int(jwk, "y")
        try:
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError:
            raise _Skip("its point is not on the P-256 curve") from None
    else:
        raise _Skip(f"its kty {_show(kty)} is not RSA or EC")
    usable = _algorithm_for(key)
    alg = jwk.get("alg")
    if alg is not None and alg != usable:
        raise _Skip(f"its alg {_show(alg)} does not match a {kty} key for {usable}")
    if usable not in algorithms:
        raise _Skip(f"it is a key for {usable}, which is not configured")
    return key


def _load_pem(pem: str, algorithms: frozenset[str]) -> PublicKey:
    from cryptography import x509  # only for the v1 PEM format: ~20 ms at import

    try:
        public_key = x509.load_pem_x509_certificate(pem.encode("utf-8")).public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise _Skip("it is not a PEM X.509 certificate with a supported key") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        key: PublicKey = _rsa_key(numbers.n, numbers.e)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        key = public_key
    else:
        raise _Skip("its certificate holds neither an RSA nor a P-256 key")
    usable = _algorithm_for(key)
    if usable not in algorithms:
        raise _Skip(f"it is a key for {usable}, which is not configured")
    return key


def _rsa_key(n: int, e: int) -> rsa.RSAPublicKey:
    if e != _RSA_EXPONENT:
        raise _Skip(f"its RSA exponent is {e}, not {_RSA_EXPONENT}")
    bits = n.bit_length()
    if not MIN_RSA_BITS <= bits <= _MAX_RSA_BITS:
        raise _Skip(f"its RSA modulus has {bits} bits, not {MIN_RSA_BITS}-{_MAX_RSA_BITS}")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:  # pragma: no cover - the checks above leave cryptography nothing to refuse
        raise _Skip("it is not a valid RSA key") from None


def _algorithm_for(key: PublicKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPublicKey) else "ES256"


def _b64_int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise _Skip(f"it has no {name}")
    # urlsafe_b64decode alone would skip characters outside the alphabet: a garbled
    # key must be refused, not loaded as some other number.
    if not _B64URL_VALUE.fullmatch(value):
        raise _Skip(f"its {name} is not base64url")
    unpadded = value.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise _Skip(f"its {name} is not base64url") from None
    return int.from_bytes(raw, "big")


def _check_algorithms(algorithms: Collection[str]) -> frozenset[str]:
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    chosen = frozenset(algorithms)
    if not chosen or not chosen <= SUPPORTED_ALGORITHMS:
        raise ConfigurationError(
            f"algorithms must be some of {', '.join(sorted(SUPPORTED_ALGORITHMS))}, "
            f"not {sorted(map(str, chosen))!r}"
        )
    return chosen


def _seconds(text: str) -> int | None:
    text = text.strip().strip('"')
    # isdigit() alone admits digits like '²' that int() refuses, and any length.
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _content_hint(response: HTTPResponse) -> str:
    content_type = response.header("content-type") or ""
    if "html" in content_type or response.body.lstrip()[:1] == b"<":
        return " with an HTML page (is the URL right?)"
    return ""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cannot_fetch(url: str) -> str:
    return f"could not fetch verification keys from {url}: "
