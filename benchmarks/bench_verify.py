"""How much does verifying an ID token cost, beside the usual ways of doing it?

Run ``python benchmarks/bench_verify.py`` (``--quick`` for a smoke run of a few
seconds). Every figure is the best of several timed runs, in microseconds per
verification, and its ratio to the floor: one bare ``cryptography`` RS256
signature check, which no verifier can beat.

Cases, all against one token minted by the local emulator:

* **floor**: ``RSAPublicKey.verify`` with the key in hand.
* **PyJWT, key in hand**: ``jwt.decode`` with the public key, ``aud`` checked.
* **PyJWT PyJWKClient**: the key looked up by ``kid`` in the emulator's JWKS,
  fetched once and cached by the client, then ``jwt.decode``.
* **google-auth**: ``google.oauth2.id_token.verify_token`` against the
  emulator's PEM certificates; google-auth fetches the certificates on every
  call (here over keep-alive loopback HTTP, far cheaper than the internet).
* **lower bound of any verifier**: what every verifier must do before a single
  check: split the token, base64-decode the payload and the signature, parse the
  JSON and check the signature; no header, claim, key lookup or cache. Beside
  it, the first-sight target leaves each verifier's own checks the difference.
* **s2sauth first sight**: ``Verifier.verify`` of a token it has not seen: two
  distinct tokens in turn through a verifier whose cache holds one, so every call
  misses the verified-token cache, parses, looks up the key, checks the signature
  and every claim, applies the allow-list and pays for the cache insert and
  eviction. Target: at most 1.5x the floor.
* **s2sauth repeated token**: the same, with the cache on and the token seen
  before (callers reuse a token for up to an hour). Target: at most 0.2x the floor.

``run(quick)`` returns the rows for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

AUDIENCE = "https://svc-abc-uc.a.run.app"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
BENCHMARK = "verify"
FIRST_SIGHT_TARGET = 1.5
REPEATED_TARGET = 0.2


def _measure(
    cases: list[tuple[str, Callable[[], None], int, float | None]], repeat: int
) -> list[tuple[str, float, float | None]]:
    """Best microseconds per call of each case, the cases' runs interleaved.

    Interleaving spreads any load on the machine over every case alike, so the
    ratios stay honest on a busy host.
    """
    best = {name: float("inf") for name, *_ in cases}
    for _, fn, _, _ in cases:
        fn()  # warm up, and fail loudly before timing if a case is broken
    for _ in range(repeat):
        for name, fn, number, _ in cases:
            seconds = timeit.timeit(fn, number=number)
            best[name] = min(best[name], seconds / number * 1e6)
    return [(name, best[name], target) for name, _, _, target in cases]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time every case; one row per case (see ``benchmarks/__main__.py`` for the fields)."""
    import google.auth.transport.requests
    import google.oauth2.id_token
    import jwt
    import requests
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from s2sauth.emulator import Emulator
    from s2sauth.verify.verifier import Verifier

    repeat = 3 if quick else 15
    fast = 100 if quick else 1000
    cached = 1000 if quick else 20_000
    slow = 3 if quick else 20

    with Emulator(CALLER) as emulator:
        token = emulator.mint(AUDIENCE, account=CALLER)
        public_key = emulator.private_key.public_key()
        signing_input, _, encoded_signature = token.rpartition(".")
        signature = base64.urlsafe_b64decode(encoded_signature + "==")
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        message = signing_input.encode()

        def floor() -> None:
            public_key.verify(signature, message, pkcs1, sha256)

        def lower_bound() -> None:
            header, payload, encoded = token.split(".")
            json.loads(base64.urlsafe_b64decode(payload + "=="))
            signed = token[: len(header) + 1 + len(payload)].encode()
            public_key.verify(base64.urlsafe_b64decode(encoded + "=="), signed, pkcs1, sha256)

        def pyjwt_key() -> None:
            jwt.decode(token, public_key, algorithms=["RS256"], audience=AUDIENCE)

        jwk_client = jwt.PyJWKClient(emulator.jwks_url, cache_keys=True)

        def pyjwt_jwks() -> None:
            key = jwk_client.get_signing_key_from_jwt(token)
            jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE)

        session = requests.Session()
        google_request = google.auth.transport.requests.Request(session)

        def google_auth() -> None:
            google.oauth2.id_token.verify_token(
                token, google_request, audience=AUDIENCE, certs_url=emulator.pem_certs_url
            )

        # Two distinct tokens taken in turn by a verifier remembering one: every call
        # misses the verified-token cache and pays for the insert and the eviction too.
        first_sight = Verifier(
            AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url, cache_size=1
        )
        fresh_tokens = itertools.cycle(
            [emulator.mint(AUDIENCE, account=CALLER, claims={"n": n}) for n in (1, 2)]
        )
        repeated = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)

        def s2sauth_first_sight() -> None:
            first_sight.verify(next(fresh_tokens))

        def s2sauth_repeated() -> None:
            repeated.verify(token)

        cases: list[tuple[str, Callable[[], None], int, float | None]] = [
            ("cryptography RS256 verify (floor)", floor, fast, None),
            ("decode + JSON + verify, no checks", lower_bound, fast, None),
            ("PyJWT decode, key in hand", pyjwt_key, fast, None),
            ("PyJWT PyJWKClient (cached JWKS)", pyjwt_jwks, fast, None),
            ("google-auth verify_token (certs per call)", google_auth, slow, None),
            ("s2sauth first sight (cache miss)", s2sauth_first_sight, fast, FIRST_SIGHT_TARGET),
            ("s2sauth repeated token (cache hit)", s2sauth_repeated, cached, REPEATED_TARGET),
        ]
        try:
            timings = _measure(cases, repeat)
        finally:
            first_sight.close()
            repeated.close()
            session.close()

    floor_us = timings[0][1]
    rows: list[dict[str, Any]] = []
    for name, value, target in timings:
        ratio = value / floor_us
        row: dict[str, Any] = {
            "benchmark": BENCHMARK,
            "case": name,
            "value": value,
            "unit": "us/verify",
            "ratio": ratio,
            "anchor": "floor",
        }
        if target is not None:
            row["target"] = f"<= {target:g}x"
            row["met"] = ratio <= target
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
    from benchmarks._report import table

    print(table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
