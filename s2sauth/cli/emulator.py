"""``s2sauth emulator``: run the metadata-server and certs emulator in the foreground."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from types import FrameType

from .._errors import ConfigurationError
from ..emulator import Emulator

__all__ = ["DEFAULT_ACCOUNTS", "register", "run"]

#: The service accounts the command serves when no ``--account`` is given: one
#: caller a demo service allows, one it does not.
DEFAULT_ACCOUNTS = (
    "caller@demo-project.iam.gserviceaccount.com",
    "stranger@other-project.iam.gserviceaccount.com",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``emulator`` subcommand."""
    parser = subparsers.add_parser(
        "emulator",
        help="run a local metadata server and Google certs endpoint",
        description=(
            "Serve the metadata protocol and Google-style signing keys on this machine, "
            "print the environment variables that point google-auth and s2sauth at it, "
            "and run until interrupted (Ctrl-C)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks one (%(default)s)"
    )
    parser.add_argument(
        "--account",
        action="append",
        metavar="EMAIL",
        help="a service account to serve, the first being 'default' (repeatable; default: "
        + ", ".join(DEFAULT_ACCOUNTS)
        + ")",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 1 when it cannot start."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before anything is printed, so a signal sent as soon as the
    # address is known stops the server cleanly instead of raising mid-startup.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator = Emulator(args.account or DEFAULT_ACCOUNTS, host=args.host, port=args.port)
            emulator.start()
        except ConfigurationError as exc:
            print(f"s2sauth emulator: {exc}", file=sys.stderr)
            return 1
        with emulator:
            for name, value in emulator.environ().items():
                print(f"export {name}={shlex.quote(value)}")
            print(f"# PEM certs: {emulator.pem_certs_url}")
            print(f"# accounts: {', '.join(emulator.service_accounts)}")
            sys.stdout.flush()
            print("s2sauth emulator: serving; press Ctrl-C to stop", file=sys.stderr)
            # A timed wait, because an untimed one is not interruptible on every platform.
            while not stop.wait(1.0):
                pass
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
