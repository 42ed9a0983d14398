"""Load: mixed valid, invalid, expired and not-allowed tokens through real servers, no mistakes.

A bounded run of ``benchmarks/soak.py``'s harness (the script runs the same for
60 s): the ASGI middleware under uvicorn and the WSGI middleware under waitress,
loopback only, each sent 2,000 requests from 4 keep-alive ``http.client``
threads, over more distinct valid tokens than the verified-token cache holds.
Every answer must be exactly the expected one: zero 5xx, zero wrong allow or deny.
"""

from __future__ import annotations

from attack_kit import AUDIENCE, CALLER, soak

from s2sauth._http import HTTPTransport
from s2sauth.emulator import Emulator
from s2sauth.verify.verifier import Verifier

REQUESTS_PER_SERVER = 2000
CACHE_SIZE = 256


def test_mixed_load_gets_every_decision_right(emulator: Emulator) -> None:
    """4,000 mixed requests over uvicorn and waitress: all served, no 5xx, no wrong decision."""
    report = soak.run(
        requests=REQUESTS_PER_SERVER,
        threads_per_server=4,
        cache_size=CACHE_SIZE,
        distinct_valid=2 * CACHE_SIZE + 100,
        emulator=emulator,
    )
    assert set(report["servers"]) == {"asgi/uvicorn", "wsgi/waitress"}
    for name, figures in report["servers"].items():
        assert figures["served"] == REQUESTS_PER_SERVER, name
        assert figures["server_errors"] == 0, name
        assert figures["transport_errors"] == 0, name
        assert figures["wrong"] == 0, figures["wrong_examples"]
        assert set(figures["by_kind"]) == {
            "valid",
            "not_allowed",
            "expired",
            "tampered",
            "wrong_audience",
            "garbage",
            "missing",
        }
    stats = report["verifier_stats"]
    assert stats.rejected_by_reason["expired"] > 0
    assert stats.key_fetches == 1  # one key fetch served the whole run


def test_verified_token_cache_stays_bounded(emulator: Emulator, transport: HTTPTransport) -> None:
    """More distinct tokens than ``cache_size``: the oldest are evicted, the newest kept."""
    verifier = Verifier(
        AUDIENCE,
        allowed_callers=[CALLER],
        certs_url=emulator.jwks_url,
        transport=transport,
        cache_size=CACHE_SIZE,
    )
    tokens = [
        emulator.mint(AUDIENCE, account=CALLER, lifetime=3600 - i) for i in range(CACHE_SIZE + 44)
    ]
    for token in tokens:
        verifier.verify(token)
    hits = verifier.stats.cache_hits
    verifier.verify(tokens[-1])
    assert verifier.stats.cache_hits == hits + 1
    verifier.verify(tokens[0])
    assert verifier.stats.cache_hits == hits + 1
