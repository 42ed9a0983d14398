"""``s2sauth token AUDIENCE``: print an ID token, like ``gcloud auth print-identity-token``."""

from __future__ import annotations

import argparse
import sys

from .._errors import ConfigurationError, TokenFetchError
from ..tokens.provider import IDTokenProvider
from ..tokens.sources import DefaultSource, MetadataServerSource

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``token`` subcommand."""
    parser = subparsers.add_parser(
        "token",
        help="print an ID token for an audience",
        description=(
            "Print a Google-signed ID token for AUDIENCE, from the metadata server "
            "(GCE_METADATA_HOST is honoured, so `s2sauth emulator` works) or, off "
            "Google Cloud, from Application Default Credentials. Like "
            "`gcloud auth print-identity-token --audiences AUDIENCE`."
        ),
    )
    parser.add_argument(
        "audience", metavar="AUDIENCE", help="the callee's audience, e.g. https://svc-abc.a.run.app"
    )
    parser.add_argument(
        "--account",
        metavar="EMAIL",
        help="a service account attached to the instance (metadata server only; "
        "default: the instance's default account, or the ADC account off Google Cloud)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the token; 0 on success, 1 when none could be had, 2 on bad arguments."""
    try:
        source = MetadataServerSource(args.account) if args.account else DefaultSource()
        token = IDTokenProvider(source).token(args.audience)
    except ConfigurationError as exc:
        return _fail(exc.message, 2)
    except TokenFetchError as exc:
        return _fail(exc.message, 1)
    print(token)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"s2sauth token: {' '.join(message.split())}", file=sys.stderr)
    return status
