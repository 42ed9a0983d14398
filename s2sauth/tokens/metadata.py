"""The metadata server's protocol, without I/O.

Everything here is plain data in, plain data out: functions that build the
:class:`~s2sauth._http.HTTPRequest` for an identity, access-token or ping call,
and functions that read the :class:`~s2sauth._http.HTTPResponse`. Each call is
one request and one reply, so the caller simply does
``parse_identity_response(transport(identity_request(host, audience)), host=host)``
(see :class:`~s2sauth.tokens.sources.MetadataServerSource`), and the tests feed the
parsers replies by hand, without a server.

Whether a failed attempt is worth another one is decided here too: every
:class:`~s2sauth.TokenFetchError` a parser raises says so in ``retryable``, by the
one rule of :func:`s2sauth._retry.is_retryable_status`, as does :func:`no_answer`
for a request that got no reply. Pacing the attempts (:class:`s2sauth._retry.Backoff`)
and sleeping are left to the caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode

from .._errors import TokenFetchError
from .._http import DEFAULT_TIMEOUT, HTTPRequest, HTTPResponse, TransportError
from .._retry import is_retryable_status
from ._tokens import AccessToken, IDToken, id_token_expiry, safe_text

# For users: the host and header. The request builders and reply parsers below serve
# MetadataServerSource and its tests; they are importable, not a promise.
__all__ = [
    "DEFAULT_HOST",
    "METADATA_FLAVOR",
    "resolve_host",
]

#: Host of the metadata server on Google Cloud, when no environment variable overrides it.
DEFAULT_HOST = "metadata.google.internal"

#: Value of the ``Metadata-Flavor`` header, required on requests and present on genuine replies.
METADATA_FLAVOR = "Google"

_ACCOUNTS_PATH = "/computeMetadata/v1/instance/service-accounts"


def resolve_host(environ: Mapping[str, str] | None = None) -> str:
    """The metadata server's ``host[:port]``, as google-auth finds it.

    ``GCE_METADATA_HOST`` wins, then the legacy ``GCE_METADATA_ROOT``, then
    :data:`DEFAULT_HOST`. A stray ``http://`` prefix or trailing slash is tolerated.

    Args:
        environ: the environment to read; ``os.environ`` (read now) if omitted.
    """
    env = os.environ if environ is None else environ
    host = env.get("GCE_METADATA_HOST") or env.get("GCE_METADATA_ROOT") or DEFAULT_HOST
    return normalize_host(host) or DEFAULT_HOST


def normalize_host(host: str) -> str:
    """``host`` as ``host[:port]``: surrounding space, ``http://`` and trailing slashes removed."""
    host = host.strip()
    if host.lower().startswith("http://"):
        host = host[len("http://") :]
    return host.rstrip("/")


def _account_url(host: str, account: str, leaf: str, query: Mapping[str, str]) -> str:
    # quote() keeps the "@" of an email but turns any "/" into %2F, so an account
    # name can never walk to another metadata path.
    return f"http://{host}{_ACCOUNTS_PATH}/{quote(account, safe='@')}/{leaf}?{urlencode(query)}"


def identity_request(
    host: str, audience: str, *, account: str = "default", timeout: float = DEFAULT_TIMEOUT
) -> HTTPRequest:
    """The request for an ID token for ``audience``, with ``format=full``.

    ``format=full`` makes the token carry ``email`` and ``email_verified``,
    which receiving services need for an allow-list.
    """
    url = _account_url(host, account, "identity", {"audience": audience, "format": "full"})
    return HTTPRequest("GET", url, {"Metadata-Flavor": METADATA_FLAVOR}, timeout=timeout)


def access_token_request(
    host: str,
    scopes: Sequence[str],
    *,
    account: str = "default",
    timeout: float = DEFAULT_TIMEOUT,
) -> HTTPRequest:
    """The request for an OAuth access token for ``scopes`` (comma-separated on the wire)."""
    url = _account_url(host, account, "token", {"scopes": ",".join(scopes)})
    return HTTPRequest("GET", url, {"Metadata-Flavor": METADATA_FLAVOR}, timeout=timeout)


def ping_request(host: str, *, timeout: float = DEFAULT_TIMEOUT) -> HTTPRequest:
    """The request that tells whether a metadata server answers at ``host`` at all."""
    return HTTPRequest(
        "GET", f"http://{host}/", {"Metadata-Flavor": METADATA_FLAVOR}, timeout=timeout
    )


def _check_reply(response: HTTPResponse, *, host: str, what: str) -> None:
    status = response.status
    if is_retryable_status(status):
        raise TokenFetchError(
            f"the metadata server at {host} answered the {what} request with HTTP {status}: "
            f"{safe_text(response.text)}",
            status=status,
            retryable=True,
        )
    if response.header("Metadata-Flavor") != METADATA_FLAVOR:
        raise TokenFetchError(
            f"the {what} reply did not come from the metadata server: the answer from {host} "
            f"(HTTP {status}) lacks 'Metadata-Flavor: Google'. Check GCE_METADATA_HOST and "
            "that no proxy or captive portal intercepts the call",
            status=status,
        )
    if status == 404:
        raise TokenFetchError(
            f"the metadata server at {host} has no such service account for the {what} "
            f"request (HTTP 404: {safe_text(response.text)}). Use 'default' or the email of "
            "a service account attached to this instance",
            status=status,
        )
    if status != 200:
        raise TokenFetchError(
            f"the metadata server at {host} refused the {what} request with HTTP {status}: "
            f"{safe_text(response.text)}",
            status=status,
        )


def parse_identity_response(response: HTTPResponse, *, host: str) -> IDToken:
    """Read an identity reply: a genuine 200 whose body is a three-part JWT.

    Raises:
        TokenFetchError: with ``retryable`` set for 408, 429 and 5xx; at once
            for any other status, a reply without ``Metadata-Flavor: Google``,
            or a body that is not a JWT with an integer ``exp``.
    """
    _check_reply(response, host=host, what="identity")
    value = response.body.decode("ascii", "replace").strip()
    return IDToken(value, id_token_expiry(value, origin=f"the metadata server at {host}"))


def parse_access_token_response(response: HTTPResponse, *, host: str, now: float) -> AccessToken:
    """Read a token reply: JSON with a string ``access_token`` and a number ``expires_in``.

    Args:
        response: the reply.
        host: for error messages.
        now: when the request was sent (epoch seconds); expiry counts from it.

    Raises:
        TokenFetchError: as :func:`parse_identity_response`, or when the JSON is not as above.
    """
    _check_reply(response, host=host, what="access token")
    try:
        data = json.loads(response.body)
    except ValueError:
        data = None
    token = data.get("access_token") if isinstance(data, dict) else None
    expires_in = data.get("expires_in") if isinstance(data, dict) else None
    if (
        not isinstance(token, str)
        or not token
        or not isinstance(expires_in, (int, float))
        or isinstance(expires_in, bool)
        or expires_in < 0
    ):
        raise TokenFetchError(
            f"the metadata server at {host} returned an access token reply without a string "
            "'access_token' and a non-negative 'expires_in'"
        )
    return AccessToken(token, now + float(expires_in))


def parse_ping_response(response: HTTPResponse, *, host: str) -> None:
    """Read a ping reply: any status counts, if the reply carries ``Metadata-Flavor: Google``.

    Raises:
        TokenFetchError: (``retryable``) what answered is not a metadata server.
    """
    if response.header("Metadata-Flavor") != METADATA_FLAVOR:
        raise TokenFetchError(
            f"something answered at {host} (HTTP {response.status}) but it is not a metadata "
            "server: the reply lacks 'Metadata-Flavor: Google'",
            status=response.status,
            retryable=True,
        )


def no_answer(exc: TransportError, host: str) -> TokenFetchError:
    """The retryable error for a request to ``host`` that got no reply (refused, timed out)."""
    return TokenFetchError(f"no answer from the metadata server at {host}: {exc}", retryable=True)
