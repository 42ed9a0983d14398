"""Refusals people can see: one rate-limited log line per refused request.

Every refusal (401, 403, 503) is logged once, at INFO, on the ``s2sauth`` logger:
the reason, the request (method and path) when an adapter named it, the caller's
email when the token was valid but the caller not allowed, and the error's
message, which never holds a token. Attacker-controlled text (the path, claim
values quoted in messages) is escaped, so a request cannot forge log lines.

Where the line shows up, and why this design. What each server's default
logging setup does with a record on a library logger:

* uvicorn, gunicorn, the Flask/werkzeug dev server, Django (runserver and under
  a WSGI server) and gRPC configure only their own loggers; the root logger has
  no handler, so Python's ``logging.lastResort`` prints WARNING and above and
  drops INFO.
* waitress's ``serve()`` calls ``logging.basicConfig()``: a root handler at
  level NOTSET, the root logger at WARNING, so INFO is dropped too.

So an INFO line is invisible everywhere by default, and a WARNING per refusal
would be wrong (a refused attacker is the service working as intended). We do
what werkzeug does for its access log, and only at the first refusal (by then
every server above has set its logging up, so we never duplicate its handler):
when the application has not set a level on the ``s2sauth`` logger, it gets
INFO; and when no handler on its way to the root would print an INFO record,
one ``StreamHandler`` to stderr is added to it. Anyone who configures the
``s2sauth`` logger (a level, a handler, ``dictConfig``) keeps full control:
``logging.getLogger("s2sauth").setLevel(logging.WARNING)`` silences refusals.

A flood cannot fill the disk: a token bucket lets :data:`BURST` lines through at
once and :data:`PER_SECOND` a second after that; the refusals it holds back are
counted (by reason) and summed up in one line before the next line it lets through.
With the ``s2sauth`` logger at DEBUG there is no limit: every refusal is written.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

from ._errors import CallerNotAllowedError, S2SAuthError

__all__ = ["BURST", "PER_SECOND", "RefusalLog", "at", "done"]

logger = logging.getLogger("s2sauth")

#: How many refusal lines may be written at once before the rate limit applies.
BURST: Final = 50
#: How many refusal lines a second are written, on average, during a flood.
PER_SECOND: Final = 1.0

# "GET /path" of the request being checked, set by the adapters (Gate.route).
_request: ContextVar[str | None] = ContextVar("s2sauth_request", default=None)
_MAX_TEXT = 300


def at(method: str, path: str) -> None:
    """Name the request being checked in this context, for its refusal line.

    The name lasts until the request is let in (:func:`done`) or its refusal is
    logged, so a refusal outside any request never borrows a stale one (a WSGI
    worker thread keeps its context from one request to the next).
    """
    _request.set(f"{method} {path}")


def done() -> None:
    """Forget the request named by :func:`at`: it was let in."""
    if _request.get() is not None:
        _request.set(None)


def _escape(text: str) -> str:
    # Printable text stays as is; anything else (newlines, ANSI escapes) is shown escaped.
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


class RefusalLog:
    """Writes refusal lines to a logger, at most ``burst`` at once and ``per_second`` after.

    Each :class:`~s2sauth.Verifier` has one, so the lines of one service are limited
    together (and one test's flood does not silence the next test's verifier).

    Args:
        target: the logger to write to.
        burst: the bucket's size.
        per_second: how fast the bucket refills.
        clock: a monotonic clock, in seconds.
    """

    def __init__(
        self,
        target: logging.Logger = logger,
        *,
        burst: int = BURST,
        per_second: float = PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.burst = burst
        self.per_second = per_second
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._suppressed: Counter[str] = Counter()
        self._suppressed_since = 0.0
        self._lock = threading.Lock()

    def __call__(self, exc: S2SAuthError) -> None:
        """Log one refusal of the current request, or count it when the rate limit holds it back."""
        request = _request.get()
        if request is not None:
            _request.set(None)  # one refusal per request
        if not _set_up:
            _make_visible()
        if not self.target.isEnabledFor(logging.INFO):
            return
        now = self._clock()
        # At DEBUG the application asked for everything: no limit (the bucket still drains).
        unlimited = self.target.isEnabledFor(logging.DEBUG)
        with self._lock:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens < 1 and not unlimited:
                if not self._suppressed:
                    self._suppressed_since = now
                self._suppressed[exc.reason] += 1
                return
            self._tokens = max(0.0, self._tokens - 1)
            suppressed, self._suppressed = self._suppressed, Counter()
        if suppressed:
            reasons = ", ".join(f"{reason} {n}" for reason, n in suppressed.most_common())
            self.target.info(
                "%d more refusals in the last %.0f s were not logged (rate limit %d, then "
                "%g a second): %s",
                suppressed.total(),
                now - self._suppressed_since,
                self.burst,
                self.per_second,
                reasons,
            )
        where = f" {_escape(request)}" if request else ""
        email = exc.email if isinstance(exc, CallerNotAllowedError) else None
        self.target.info(
            "rejected: %s (%d)%s: %s",
            exc.reason,
            exc.status_code,
            where,
            _escape(exc.message),
            extra={
                "s2sauth_reason": exc.reason,
                "s2sauth_request": request,
                "s2sauth_caller": email,
            },
        )


_setup_lock = threading.Lock()
_set_up = False


def _has_level_handler(target: logging.Logger) -> bool:
    level = target.getEffectiveLevel()
    current: logging.Logger | None = target
    while current is not None:
        if any(handler.level <= level for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _make_visible() -> None:
    global _set_up
    with _setup_lock:
        if _set_up:
            return
        _set_up = True
        if logger.level != logging.NOTSET:
            return  # the application chose; respect it
        logger.setLevel(logging.INFO)
        if not _has_level_handler(logger):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s: %(message)s"))
            logger.addHandler(handler)
