"""The OpenTelemetry hooks the cores call; inert (and importing nothing) until enabled.

:func:`s2sauth.otel.enable` fills :data:`active`; until then every hook is one
attribute check. What is recorded (never a token, in any attribute or event):

Spans
    ``s2sauth.keys.fetch`` (``url.full``: the keys URL), ``s2sauth.token.fetch``
    (an outbound token fetch, ADC included) and, inside it,
    ``s2sauth.metadata_server`` (``server.address``), so the metadata server's own
    time shows separately from the rest of a fetch.
Counters
    ``s2sauth.verifications`` (``outcome``: accepted or refused; ``reason``),
    ``s2sauth.refusals`` (``reason``, ``http.response.status_code``),
    ``s2sauth.fetches`` (``kind``: keys, token, metadata_server; ``outcome``: ok or error),
    ``s2sauth.cache_hits`` (``cache``: verified_tokens or tokens).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import S2SAuthError

__all__ = ["Instruments", "accepted", "active", "cache_hit", "refused", "traced"]

F = TypeVar("F", bound=Callable[..., Any])


class Instruments:
    """A tracer and the counters, made by :func:`s2sauth.otel.enable`."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        self.tracer = tracer
        self.verifications = meter.create_counter(
            "s2sauth.verifications", unit="{token}", description="Tokens checked, by outcome"
        )
        self.refusals = meter.create_counter(
            "s2sauth.refusals", unit="{request}", description="Requests refused, by reason"
        )
        self.fetches = meter.create_counter(
            "s2sauth.fetches", unit="{fetch}", description="Key and token fetches"
        )
        self.cache_hits = meter.create_counter(
            "s2sauth.cache_hits", unit="{hit}", description="Answers served from a cache"
        )


#: The instruments in use, or ``None``: OpenTelemetry is not enabled.
active: Instruments | None = None

_ACCEPTED = {"outcome": "accepted", "reason": "ok"}
_VERIFIED_HIT = {"cache": "verified_tokens"}
_TOKEN_HIT = {"cache": "tokens"}


def accepted(*, cache_hit: bool) -> None:
    """A token passed every check (from the verified-token cache or not)."""
    if active is not None:
        active.verifications.add(1, _ACCEPTED)
        if cache_hit:
            active.cache_hits.add(1, _VERIFIED_HIT)


def refused(exc: S2SAuthError) -> None:
    """A request was refused."""
    if active is not None:
        active.verifications.add(1, {"outcome": "refused", "reason": exc.reason})
        active.refusals.add(1, {"reason": exc.reason, "http.response.status_code": exc.status_code})


def cache_hit() -> None:
    """An outbound token was served from the cache."""
    if active is not None:
        active.cache_hits.add(1, _TOKEN_HIT)


def traced(
    name: str, kind: str, attributes: Callable[[Any], dict[str, str]] | None = None
) -> Callable[[F], F]:
    """Decorate a fetch method: a span named ``name`` and a ``s2sauth.fetches`` count.

    Args:
        name: the span's name.
        kind: the ``kind`` attribute of the count.
        attributes: span attributes from the method's ``self`` (never a token).
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            instruments = active
            if instruments is None:
                return method(*args, **kwargs)
            attrs = attributes(args[0]) if attributes is not None else {}
            outcome = "error"
            try:
                with instruments.tracer.start_as_current_span(name, attributes=attrs):
                    result = method(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                instruments.fetches.add(1, {"kind": kind, "outcome": outcome})

        return wrapper  # type: ignore[return-value]

    return decorate
