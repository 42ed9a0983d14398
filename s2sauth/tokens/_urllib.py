"""A google-auth transport over urllib, for Application Default Credentials.

A module of its own so that google-auth is imported only when ADC is used.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport

__all__ = ["UrllibRequest"]


class _UrllibResponse(google.auth.transport.Response):
    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status = status
        self._headers = headers
        self._data = data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class UrllibRequest(google.auth.transport.Request):
    """A google-auth transport over :mod:`urllib.request`, for the ADC token endpoints.

    Why urllib and not :class:`~s2sauth._http.HTTPTransport`: off Google Cloud,
    ``oauth2.googleapis.com`` and ``iamcredentials.googleapis.com`` are often
    reachable only through a corporate ``HTTPS_PROXY``, which urllib honours
    (with ``NO_PROXY``) and HTTPTransport deliberately ignores. It needs no
    dependency beyond the standard library. The metadata server never goes
    through here, and neither does an impersonated service account's ID-token
    call to ``generateIdToken``: google-auth makes that one with its own
    ``requests`` session (which honours ``HTTPS_PROXY`` and ``REQUESTS_CA_BUNDLE``),
    so those credentials need the ``requests`` extra.

    Args:
        timeout: seconds per request when google-auth does not say.
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
        # A new opener per call reads the proxy settings now, not when the first call
        # in the process happened (urlopen's shared opener keeps the first ones forever).
        opener = urllib.request.build_opener()
        try:
            with opener.open(request, timeout=timeout or self._timeout) as reply:
                return _UrllibResponse(reply.status, dict(reply.headers.items()), reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return _UrllibResponse(exc.code, dict(exc.headers.items()), exc.read())
        except (OSError, http.client.HTTPException) as exc:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"{method} {url} failed: {exc}"
            ) from exc
