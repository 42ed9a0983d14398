"""``s2sauth doctor``: which identity am I, can I mint a token, do the keys answer?"""

from __future__ import annotations

import argparse
from typing import Any

from .._doctor import DEFAULT_AUDIENCE, Finding, Status, diagnose

_INDENT = " " * 24


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``doctor`` subcommand."""
    parser = subparsers.add_parser(
        "doctor",
        help="check this machine's identity, token minting and keys endpoint",
        description="Check where this process stands: which identity it runs as (and whether "
        "that is the over-privileged Compute Engine default service account), whether it can "
        "mint an ID token for an audience, and whether the keys endpoint answers. Exits 1 if "
        "any check fails.",
    )
    parser.add_argument(
        "--audience",
        default=DEFAULT_AUDIENCE,
        help=f"audience to mint a test token for (default: {DEFAULT_AUDIENCE})",
    )
    parser.add_argument(
        "--certs-url",
        default=None,
        help="keys endpoint to check (default: $S2SAUTH_CERTS_URL, else Google's)",
    )
    parser.set_defaults(handler=run)


def _print(finding: Finding) -> None:
    print(f"{finding.status.value:<6}{finding.check:<18}{finding.summary}")
    for line in finding.details:
        print(f"{_INDENT}{line}")
    if finding.fix and finding.status is not Status.OK:
        print(f"{_INDENT}fix: {finding.fix}")


def run(args: argparse.Namespace) -> int:
    """Run every check and print one line per check; 0 unless a check failed."""
    print(f"s2sauth doctor (audience {args.audience})\n")
    findings = diagnose(args.audience, certs_url=args.certs_url)
    for finding in findings:
        _print(finding)
    counts = {status: sum(f.status is status for f in findings) for status in Status}
    print("\n" + ", ".join(f"{n} {status.value}" for status, n in counts.items()))
    return 1 if counts[Status.FAIL] else 0
