"""The demo's one-line verification cost: a quick in-process measurement.

The benchmark proper, with its anchors (the bare RSA check, PyJWT, google-auth) and
targets, is ``python -m benchmarks bench_verify``; this only gives the demo's reader
an order of magnitude.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .._http import HTTPTransport
    from ..emulator import Emulator

__all__ = ["verification_cost"]

# How many distinct tokens, and how many repeats of one, the cost measurement verifies.
_FRESH_SAMPLES = 100
_CACHED_SAMPLES = 2000


def verification_cost(
    emulator: Emulator, audience: str, caller: str, transport: HTTPTransport
) -> tuple[float, float]:
    """Microseconds per verify: a token seen for the first time, and one already verified."""
    from ..verify.verifier import Verifier

    verifier = Verifier(
        audience, allowed_callers=[caller], certs_url=emulator.jwks_url, transport=transport
    )
    verifier.keyset.refresh()
    now = int(time.time())
    # Distinct tokens (RS256 signatures are deterministic, so vary iat).
    tokens = [
        emulator.mint(audience, account=caller, claims={"iat": now - i, "exp": now - i + 3600})
        for i in range(_FRESH_SAMPLES)
    ]
    started = time.perf_counter()
    for token in tokens:
        verifier.verify(token)
    fresh = (time.perf_counter() - started) / len(tokens)
    started = time.perf_counter()
    for _ in range(_CACHED_SAMPLES):
        verifier.verify(tokens[0])
    cached = (time.perf_counter() - started) / _CACHED_SAMPLES
    return fresh * 1e6, cached * 1e6
