"""Audiences a :class:`~s2sauth.Verifier` can work out rather than be told verbatim.

* :class:`PushAudience`: "this service's base URL + the request path". Pub/Sub
  push, Cloud Tasks, Cloud Scheduler and Eventarc sign their ID tokens for the
  *full target URL* by default (the push endpoint, the task's or job's URI),
  path included, so the audience a receiver expects depends on the path of the
  request. The base URL is configuration; the host is never read from the request
  (``Host`` and ``X-Forwarded-Host`` are whatever the sender wrote).
* :class:`CloudRunAudience`: "this service, on Cloud Run": the deterministic URL
  ``https://SERVICE-PROJECT_NUMBER.REGION.run.app`` from ``K_SERVICE`` and the
  metadata server, plus custom audiences from an environment variable.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

from .._errors import ConfigurationError
from .._http import HTTPRequest, HTTPTransport, Transport, TransportError

__all__ = ["AUDIENCES_ENV", "CloudRunAudience", "PushAudience"]

logger = logging.getLogger("s2sauth")

#: Environment variable listing a service's custom audiences, comma-separated
#: (the values given to ``gcloud run services update --add-custom-audiences``).
AUDIENCES_ENV: Final = "S2SAUTH_AUDIENCES"

_METADATA_HOST = "metadata.google.internal"
_REGION = re.compile(r"projects/([0-9]+)/regions/([a-z0-9-]+)")
_SERVICE = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")


class PushAudience:
    """The audience "``base_url`` + the request's path (with or without its query)".

    Use it as (one of) a :class:`~s2sauth.Verifier`'s audiences in a service that
    receives Pub/Sub push, Cloud Tasks, Cloud Scheduler or Eventarc deliveries
    whose tokens carry the default audience, the full target URL. A token is
    accepted when its ``aud`` is ``base_url + path`` or ``base_url + path + "?" +
    query`` of the very request it came with; the adapters hand the gate the path
    and query. Outside an adapter, pass them to :meth:`Verifier.verify`.

    Threat model: the host part comes only from ``base_url``, never from the
    request; a token minted for another service's URL is refused whatever
    ``Host`` or ``X-Forwarded-Host`` the request claims. A token for one path of
    this service is refused on another path.

    Args:
        base_url: the service's URL as senders address it, such as
            ``https://my-svc-123456789012.europe-west1.run.app`` (no trailing slash
            needed, no query or fragment).

    Raises:
        ConfigurationError: not an http(s) URL, or one with a query or fragment.

    .. versionadded:: 0.2
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigurationError(f"a push base URL is an http(s) URL, not {base_url!r}")
        if parts.query or parts.fragment or "?" in base_url or "#" in base_url:
            raise ConfigurationError(f"a push base URL has no query or fragment: {base_url!r}")
        #: The base URL, without a trailing slash.
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"PushAudience({self.base_url!r})"

    def covers(self, aud: str) -> bool:
        """Whether ``aud`` is this base URL or a URL under it (path boundaries respected)."""
        base = self.base_url
        return aud.startswith(base) and (len(aud) == len(base) or aud[len(base)] in "/?")

    def accepts(self, aud: str, path: str, query: str = "") -> bool:
        """Whether ``aud`` is this base URL + ``path`` (+ ``?query``, if ``aud`` has one).

        Args:
            aud: the token's audience.
            path: the request's path as the application sees it, percent-decoded.
            query: the request's raw query string, without ``?``.
        """
        if not self.covers(aud):
            return False
        rest, mark, aud_query = aud[len(self.base_url) :].partition("?")
        # Senders percent-encode as they like; compare decoded paths, the way apps route.
        if (unquote(rest) or "/") != (path or "/"):
            return False
        return not mark or aud_query == query


class CloudRunAudience:
    """This service's own audiences on Cloud Run, worked out rather than pasted.

    Use it as a :class:`~s2sauth.Verifier`'s audience in a service deployed on
    Cloud Run: it stands for the service's deterministic URL
    ``https://SERVICE-PROJECT_NUMBER.REGION.run.app`` (``K_SERVICE``, and the
    metadata server's ``instance/region``, ``projects/NUMBER/regions/REGION``),
    plus the custom audiences listed in ``$S2SAUTH_AUDIENCES`` (comma-separated,
    as configured with ``--add-custom-audiences``). The constructor does no I/O:
    the verifier resolves it on first use, or when you call
    :meth:`Verifier.resolve_audiences` at startup (recommended: a mistake then
    stops the service instead of answering 503s).

    Args:
        environ: where to read ``K_SERVICE``, ``S2SAUTH_AUDIENCES`` and
            ``GCE_METADATA_HOST`` (``os.environ`` by default).
        transport: performs the metadata requests.

    .. versionadded:: 0.2
    """

    def __init__(
        self, *, environ: Mapping[str, str] | None = None, transport: Transport | None = None
    ) -> None:
        self._environ = environ
        self._transport = transport

    def __repr__(self) -> str:
        return "CloudRunAudience()"

    def resolve(self) -> tuple[str, ...]:
        """The audiences: the ``run.app`` URL first, then the custom ones. Blocking.

        Raises:
            ConfigurationError: not on Cloud Run (no ``K_SERVICE``), or the metadata
                server did not say where the service runs.
        """
        environ = os.environ if self._environ is None else self._environ
        service = environ.get("K_SERVICE", "")
        if not service:
            raise ConfigurationError(
                "CloudRunAudience needs Cloud Run: K_SERVICE is not set. Off Cloud Run, "
                "give the audience (the URL callers use) explicitly"
            )
        if not _SERVICE.fullmatch(service):
            raise ConfigurationError(f"K_SERVICE {service!r} is not a Cloud Run service name")
        host = environ.get("GCE_METADATA_HOST") or _METADATA_HOST
        region_path = self._metadata(host, "instance/region")
        match = _REGION.fullmatch(region_path)
        if match is None:
            raise ConfigurationError(
                f"the metadata server's instance/region is {region_path[:80]!r}, not "
                "'projects/NUMBER/regions/REGION': is this Cloud Run?"
            )
        number = self._metadata(host, "project/numeric-project-id")
        if not number.isdigit():
            raise ConfigurationError(
                f"the metadata server's numeric project ID is {number[:40]!r}, not digits"
            )
        audiences = [f"https://{service}-{number}.{match.group(2)}.run.app"]
        custom = environ.get(AUDIENCES_ENV, "")
        audiences += [value.strip() for value in custom.split(",") if value.strip()]
        logger.info("this service's audiences on Cloud Run: %s", ", ".join(audiences))
        return tuple(dict.fromkeys(audiences))

    def _metadata(self, host: str, path: str) -> str:
        own = HTTPTransport() if self._transport is None else None
        transport = own or self._transport
        assert transport is not None
        url = f"http://{host}/computeMetadata/v1/{path}"
        try:
            reply = transport(HTTPRequest("GET", url, {"Metadata-Flavor": "Google"}))
        except TransportError as exc:
            raise ConfigurationError(
                f"CloudRunAudience could not reach the metadata server at {host}: {exc}"
            ) from exc
        finally:
            if own is not None:
                own.close()
        if reply.status != 200 or reply.header("metadata-flavor") != "Google":
            raise ConfigurationError(
                f"the metadata server at {host} answered {path} with HTTP {reply.status}"
            )
        return reply.text.strip()
