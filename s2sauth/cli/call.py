"""``s2sauth call URL``: a curl-like request with an ID token attached."""

from __future__ import annotations

import argparse
import http
import math
import re
import sys
from pathlib import Path

from .. import __version__
from .._errors import ConfigurationError, TokenFetchError
from .._http import HTTPRequest, HTTPTransport, TransportError
from .._outbound import HEADER_MODES, origin
from ..tokens.provider import IDTokenProvider
from ..tokens.sources import DefaultSource, MetadataServerSource

__all__ = ["register", "run"]

# RFC 9110 token (method and header names), and what may not appear in a header value:
# control characters, and anything http.client cannot encode as latin-1.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0100-\U0010ffff]")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``call`` subcommand."""
    parser = subparsers.add_parser(
        "call",
        help="make an authenticated HTTP request (curl-like)",
        description=(
            "Send one request to URL with an ID token for its origin (or --audience) and "
            "print the status line (to stderr, or with the headers to stdout under -i) "
            "and the body (text with a final newline, binary bytes unchanged). Redirects "
            "are not followed, so the token never leaves the "
            "origin. Exits 0 on a 2xx answer, 1 otherwise, 2 on bad arguments."
        ),
    )
    parser.add_argument("url", metavar="URL", help="http:// or https:// URL to call")
    parser.add_argument("-X", "--request", dest="method", metavar="METHOD", help="HTTP method")
    parser.add_argument(
        "-d", "--data", metavar="DATA", help="request body; @FILE reads a file, @- stdin"
    )
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header (repeatable)",
    )
    parser.add_argument("--audience", metavar="AUDIENCE", help="default: the URL's origin")
    parser.add_argument(
        "--header-mode",
        choices=tuple(HEADER_MODES),
        default="authorization",
        help="which header(s) carry the token (default: authorization)",
    )
    parser.add_argument("--account", metavar="EMAIL", help="service account (metadata server)")
    parser.add_argument("-i", "--include", action="store_true", help="print response headers")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Make the call; 0 on a 2xx answer, 1 on any other answer or failure, 2 on bad arguments."""
    try:
        request = _build_request(args)
    except ConfigurationError as exc:
        return _fail(exc.message, 2)
    except TokenFetchError as exc:
        return _fail(exc.message, 1)
    try:
        response = HTTPTransport()(request)
    except TransportError as exc:
        return _fail(str(exc), 1)
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    status_line = f"HTTP {response.status} {phrase}".rstrip()
    if args.include:
        lines = [status_line, *(f"{k}: {v}" for k, v in response.headers.items()), "", ""]
        sys.stdout.write("\r\n".join(lines))
    else:
        print(status_line, file=sys.stderr)
    sys.stdout.flush()
    sys.stdout.buffer.write(_printable(response.body))
    sys.stdout.buffer.flush()
    return 0 if 200 <= response.status < 300 else 1


def _build_request(args: argparse.Namespace) -> HTTPRequest:
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigurationError("--timeout must be a positive number of seconds")
    url_origin = origin(args.url)
    if url_origin is None:
        raise ConfigurationError(f"URL must be an http:// or https:// URL: {args.url!r}")
    method = (args.method or ("POST" if args.data is not None else "GET")).upper()
    if not _TOKEN.fullmatch(method):
        raise ConfigurationError(f"bad method {method!r}")
    headers = {"User-Agent": f"s2sauth/{__version__}"}
    for number, header in enumerate(args.headers, 1):
        name, sep, value = header.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or _FORBIDDEN.search(value):
            # Not quoted back: a malformed header may well hold a credential.
            raise ConfigurationError(f"header #{number} is malformed: use -H 'Name: value'")
        headers[name] = value.strip()
    body = _body(args.data)
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # as curl does
    source = MetadataServerSource(args.account) if args.account else DefaultSource()
    token = IDTokenProvider(source).token(url_origin if args.audience is None else args.audience)
    headers.update(dict.fromkeys(HEADER_MODES[args.header_mode], f"Bearer {token}"))
    return HTTPRequest(method, args.url, headers, body, timeout=args.timeout)


def _body(data: str | None) -> bytes | None:
    if data is None or not data.startswith("@"):
        return None if data is None else data.encode()
    if data == "@-":
        return sys.stdin.buffer.read()
    try:
        return Path(data[1:]).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {data[1:]!r}: {exc.strerror}") from exc


def _printable(body: bytes) -> bytes:
    # A text body ends its line, so the shell prompt (or the next command's output) does
    # not start on it; binary bytes go out unchanged, for `s2sauth call URL > file`.
    if not body or body.endswith(b"\n") or b"\0" in body:
        return body
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    return body + b"\n"


def _fail(message: str, status: int) -> int:
    print(f"s2sauth call: {' '.join(message.split())}", file=sys.stderr)
    return status
