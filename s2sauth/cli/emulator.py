"""``s2sauth emulator``: run the metadata-server and certs emulator in the foreground."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .._errors import ConfigurationError
from ..emulator import Emulator

__all__ = ["DEFAULT_ACCOUNTS", "exports", "is_loopback", "register", "run"]

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
            "and run until interrupted (Ctrl-C). Each --account also gets a metadata "
            "server of its own, where it is 'default', so each local service can run as "
            "its own identity."
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (%(default)s); anything but loopback lets every machine "
        "that can reach it mint tokens",
    )
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
    parser.add_argument(
        "--env-file",
        action="append",
        metavar="PATH",
        help="write the exports for the Nth --account (its own metadata server) to the Nth "
        "PATH once serving, for `. PATH` in a shell; removed on exit (repeatable)",
    )
    parser.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exports(environ: dict[str, str]) -> str:
    """``environ`` as ``export NAME=value`` lines a POSIX shell can load."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environ.items())


def _write_env_files(emulator: Emulator, accounts: list[str], paths: list[str]) -> list[Path]:
    written = []
    for account, path in zip(accounts, paths, strict=False):
        target = Path(path)
        # Written whole, then renamed: a script waiting for the file never reads half of it.
        partial = target.with_name(target.name + ".partial")
        partial.write_text(exports(emulator.environ(account)), encoding="utf-8")
        os.replace(partial, target)
        written.append(target)
    return written


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM.

    Returns 0 on a stop after serving, 1 when it cannot start, 2 for more
    ``--env-file`` than accounts, 130 when interrupted before it served.
    """
    accounts = list(args.account or DEFAULT_ACCOUNTS)
    env_files = list(args.env_file or [])
    if len(env_files) > len(accounts):
        print(
            f"s2sauth emulator: {len(env_files)} --env-file for {len(accounts)} account(s); "
            "the Nth file is for the Nth --account",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before anything is printed, so a signal sent as soon as the
    # address is known stops the server cleanly instead of raising mid-startup.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    written: list[Path] = []
    try:
        try:
            emulator = Emulator(accounts, host=args.host, port=args.port)
            emulator.start()
        except ConfigurationError as exc:
            print(f"s2sauth emulator: {exc}", file=sys.stderr)
            return 1
        with emulator:
            if stop.is_set():  # interrupted while generating keys: nothing was served
                return 130
            if not is_loopback(args.host):
                print(_EXPOSED.format(host=args.host), file=sys.stderr)
            own = {account: emulator.host_for(account) for account in accounts[1:]}
            sys.stdout.write(exports(emulator.environ()))
            print(f"# PEM certs: {emulator.pem_certs_url}")
            print(f"# accounts: {', '.join(emulator.service_accounts)}")
            for account, host in own.items():
                print(f"# as {account}: export GCE_METADATA_HOST={host} GCE_METADATA_IP={host}")
            sys.stdout.flush()
            written = _write_env_files(emulator, accounts, env_files)
            print("s2sauth emulator: serving; press Ctrl-C to stop", file=sys.stderr)
            # A timed wait, because an untimed one is not interruptible on every platform.
            while not stop.wait(1.0):
                pass
        return 0
    finally:
        for path in written:
            path.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_EXPOSED = """\
s2sauth emulator: WARNING: listening on {host}, not on loopback.
s2sauth emulator: WARNING: ANY machine that can reach this address can mint ID tokens
s2sauth emulator: WARNING: for these service accounts that every service trusting this
s2sauth emulator: WARNING: emulator's keys accepts. Use --host 127.0.0.1 unless you mean it."""
