"""``s2sauth push URL --as EMAIL``: deliver a Pub/Sub push message to a local service.

The request is what a Pub/Sub push subscription with authentication sends: a
``POST`` of the JSON envelope (``message.data`` base64, ``attributes``,
``messageId``, ``publishTime``, ``subscription``) with ``Authorization: Bearer``
and an ID token as ``EMAIL`` whose audience is the push URL (Pub/Sub's default).
The token comes from the metadata server at ``GCE_METADATA_HOST``: run
``s2sauth emulator --account EMAIL`` and export what it prints, in the shell of
the push and of the service, so the service trusts the emulator's keys.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import secrets
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError, TokenFetchError
from .._http import HTTPRequest, HTTPTransport, TransportError
from ..tokens.provider import IDTokenProvider
from ..tokens.sources import MetadataServerSource

__all__ = ["envelope", "register", "run"]

# What Pub/Sub push requests say they are.
_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``push`` subcommand."""
    parser = subparsers.add_parser(
        "push",
        help="deliver a Pub/Sub push message, with a token, to a local service",
        description=(
            "POST a Pub/Sub push envelope to URL with an ID token as EMAIL for the "
            "audience URL, as an authenticated push subscription does. The token comes "
            "from GCE_METADATA_HOST: run `s2sauth emulator --account EMAIL` and export "
            "its environment here and in the service."
        ),
    )
    parser.add_argument(
        "url", metavar="URL", help="the push endpoint, e.g. http://127.0.0.1:8080/push"
    )
    parser.add_argument(
        "--as", dest="account", metavar="EMAIL", required=True, help="the push service account"
    )
    parser.add_argument("--data", default="", metavar="JSON", help="the message data (text)")
    parser.add_argument(
        "--attributes",
        action="append",
        default=[],
        metavar="K=V",
        help="a message attribute (repeatable)",
    )
    parser.add_argument(
        "--audience", help="the token's audience when the subscription sets one (default: URL)"
    )
    parser.add_argument(
        "--subscription",
        default="projects/demo-project/subscriptions/s2sauth-push",
        help="the subscription named in the envelope (%(default)s)",
    )
    parser.set_defaults(handler=run)


def envelope(
    data: bytes,
    attributes: Mapping[str, str],
    subscription: str,
    *,
    message_id: str | None = None,
    publish_time: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The JSON body of a Pub/Sub push request.

    Pub/Sub writes ``messageId`` and ``publishTime`` twice, camelCase and
    snake_case; receivers read either.
    """
    message_id = message_id or str(secrets.randbelow(10**16))
    when = publish_time or datetime.datetime.now(datetime.timezone.utc)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode("ascii"),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": stamp,
        "publish_time": stamp,
    }
    if attributes:
        message["attributes"] = dict(attributes)
    return {"message": message, "subscription": subscription}


def run(args: argparse.Namespace) -> int:
    """Deliver the message; 0 for a 2xx answer, 1 otherwise, 2 on bad arguments."""
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return _fail(f"URL must be an http(s) URL, not {args.url!r}", 2)
    attributes: dict[str, str] = {}
    for item in args.attributes:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return _fail(f"--attributes takes KEY=VALUE, not {item!r}", 2)
        attributes[key] = value
    if not os.environ.get("GCE_METADATA_HOST"):
        return _fail(
            "GCE_METADATA_HOST is not set: run `s2sauth emulator --account "
            f"{args.account}` and export what it prints",
            2,
        )
    try:
        provider = IDTokenProvider(MetadataServerSource(args.account))
        token = provider.token(args.audience or args.url)
    except ConfigurationError as exc:
        return _fail(exc.message, 2)
    except TokenFetchError as exc:
        return _fail(exc.message, 1)
    body = json.dumps(envelope(args.data.encode("utf-8"), attributes, args.subscription)).encode(
        "utf-8"
    )
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
    }
    transport = HTTPTransport()
    try:
        reply = transport(HTTPRequest("POST", args.url, headers, body, timeout=30.0))
    except TransportError as exc:
        return _fail(f"could not deliver to {args.url}: {exc}", 1)
    finally:
        transport.close()
    print(f"HTTP {reply.status}")
    if reply.body:
        print(reply.text)
    return 0 if 200 <= reply.status < 300 else 1


def _fail(message: str, status: int) -> int:
    print(f"s2sauth push: {' '.join(message.split())}", file=sys.stderr)
    return status
