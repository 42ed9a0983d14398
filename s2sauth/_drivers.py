"""Drivers for the sans-IO flows of both cores.

A *flow* is a generator that yields the :class:`~s2sauth._http.HTTPRequest` it
needs, is sent back the :class:`~s2sauth._http.HTTPResponse` (or has a
:class:`~s2sauth._http.TransportError` thrown into it), and finally returns its
result::

    def fetch_flow(audience) -> Flow[str]:
        response = yield identity_request(audience)   # plain data, no I/O
        return parse_identity_response(response)

The flow decides everything (what to ask, how to read the answer, whether an
error is worth another try); the driver only moves bytes. Async callers never
drive a flow on the event loop: :meth:`s2sauth._flight.SingleFlight.ado` runs the
whole fetch, this driver included, in a worker thread, which is also where the
single flight shared with threaded callers lives.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeAlias, TypeVar

from ._http import HTTPRequest, HTTPResponse, Transport, TransportError

T = TypeVar("T")

Flow: TypeAlias = Generator[HTTPRequest, HTTPResponse, T]


def run_sync(flow: Flow[T], transport: Transport) -> T:
    """Drive ``flow`` to completion, performing each request with ``transport``."""
    try:
        request = next(flow)
        while True:
            try:
                response = transport(request)
            except TransportError as exc:
                request = flow.throw(exc)
            else:
                request = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result
