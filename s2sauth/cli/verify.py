"""``s2sauth verify TOKEN --audience A``: check an ID token as a receiving service would."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from .._errors import CallerNotAllowedError, ConfigurationError, InvalidTokenError, KeyFetchError
from .._http import HTTPTransport
from ..verify.caller import Caller
from ..verify.verifier import Verifier

__all__ = ["keys_hint", "register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify`` subcommand."""
    parser = subparsers.add_parser(
        "verify",
        help="check an ID token as a receiving service would",
        description=(
            "Verify an ID token (signature, issuer, audience, times) and the caller "
            "allow-list. Prints the caller and claims and exits 0, or prints the exact "
            "reason for the rejection and exits 1."
        ),
    )
    parser.add_argument("token", metavar="TOKEN", help="the ID token, or '-' to read it from stdin")
    parser.add_argument(
        "--audience",
        "-a",
        action="append",
        required=True,
        metavar="AUDIENCE",
        help="an accepted audience, e.g. https://svc-abc-uc.a.run.app (repeatable)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        metavar="EMAIL",
        help="an allowed caller: service-account email or numeric ID (repeatable; "
        "default: any caller with a valid token)",
    )
    parser.add_argument(
        "--certs-url",
        metavar="URL",
        help="the keys endpoint (default: $S2SAUTH_CERTS_URL if set, else Google's)",
    )
    parser.add_argument("--leeway", type=float, metavar="SECONDS", help="clock skew allowed")
    parser.add_argument(
        "--trust-cloud-run-iam",
        action="store_true",
        help="accept a token whose signature Cloud Run removed after its IAM check",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def _caller(caller: Caller) -> dict[str, Any]:
    return {
        "email": caller.email,
        "subject": caller.subject,
        "audience": caller.audience,
        "issued_at": caller.issued_at.isoformat(),
        "expires_at": caller.expires_at.isoformat(),
    }


def keys_hint(certs_url: str | None, environ: Mapping[str, str]) -> str:
    """What to add to a key-fetch failure: off Google Cloud, ``S2SAUTH_CERTS_URL`` must be set.

    Empty when ``--certs-url`` or ``S2SAUTH_CERTS_URL`` named the keys; else the keys
    came from Google's URL by default, which a laptop or CI may not reach.
    """
    if certs_url or environ.get("S2SAUTH_CERTS_URL"):
        return ""
    return (
        ". S2SAUTH_CERTS_URL is not set, so the keys were fetched from Google's URL; "
        "against the emulator, export the S2SAUTH_CERTS_URL it prints (or pass --certs-url)"
    )


def run(args: argparse.Namespace) -> int:
    """Verify ``args.token``; 0 when accepted, 1 when rejected, 2 on bad arguments."""
    token = sys.stdin.read() if args.token == "-" else args.token
    options: dict[str, Any] = {"trust_cloud_run_iam": args.trust_cloud_run_iam}
    if args.certs_url:
        options["certs_url"] = args.certs_url
    if args.leeway is not None:
        options["leeway"] = args.leeway
    transport = HTTPTransport()
    try:
        verifier = Verifier(
            args.audience, allowed_callers=args.allow, transport=transport, **options
        )
        caller = verifier.verify(token.strip())
    except ConfigurationError as exc:
        print(f"s2sauth verify: {exc.message}", file=sys.stderr)
        return 2
    except (InvalidTokenError, CallerNotAllowedError, KeyFetchError) as exc:
        if args.json:
            rejection = {"valid": False, "status": exc.status_code, "reason": exc.reason}
            print(json.dumps({**rejection, "error": exc.error, "message": exc.message}))
        else:
            message = exc.message
            if isinstance(exc, KeyFetchError):
                message += keys_hint(args.certs_url, os.environ)
            print(f"rejected ({exc.status_code} {exc.reason}): {message}", file=sys.stderr)
        return 1
    finally:
        transport.close()
    claims = dict(caller.claims)
    if args.json:
        print(json.dumps({"valid": True, "caller": _caller(caller), "claims": claims}, indent=2))
        return 0
    print("valid token")
    for name, value in _caller(caller).items():
        print(f"  {name + ':':<12}{value}")
    print("claims:")
    print(json.dumps(claims, indent=2, sort_keys=True))
    return 0
