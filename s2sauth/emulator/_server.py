"""A small threaded HTTP/1.1 server on loopback that hands every request to an *app*.

The app is a plain function, :class:`Request` in, :class:`Reply` out, so the
emulator's behaviour (routing, claims, faults) is data and the socket work
stays here: keep-alive, ``Content-Length``, waiting out an injected delay,
dropping a connection without a reply, and a shutdown that leaves no thread
or socket behind.
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import cast
from urllib.parse import parse_qs, urlsplit

# Request bodies are tiny (a bound-token certificate chain at most).
_MAX_BODY = 1 << 20
_JOIN_TIMEOUT = 5.0


@dataclass(frozen=True)
class Request:
    """One request as the app sees it. ``headers`` keys are lower-case."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Reply:
    """What to answer, after ``delay`` seconds; ``drop`` closes without answering."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False


App = Callable[[Request], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, a reply on a reused keep-alive connection waits ~40 ms for
    # the delayed ACK of the previous one (Nagle), which would dominate every fetch.
    disable_nagle_algorithm = True
    server_version = "s2sauth-emulator"

    @property
    def _server(self) -> LoopbackServer:
        return cast(LoopbackServer, self.server)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        # Silent by design: request lines carry audiences, and nothing here may
        # ever risk printing a token.
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, header too long...) would
        # echo parts of the request; answer with the bare reason phrase instead.
        self._refuse(code, self.responses.get(code, ("Error",))[0])

    def _refuse(self, code: int, text: str) -> None:
        self.close_connection = True
        # A request line too broken to name its version leaves http.server at
        # HTTP/0.9, which would answer without a status line or headers.
        self.request_version = self.protocol_version
        headers = (*self._server.default_headers, ("Content-Type", "text/plain; charset=utf-8"))
        self._write(Reply(code, f"{text}\n".encode(), headers))

    def _serve(self) -> None:
        try:
            parts = urlsplit(self.path)
        except ValueError:  # e.g. an absolute-form target with an unbalanced IPv6 bracket
            self._refuse(400, "the request target is not a valid URL")
            return
        headers = {name.lower(): value for name, value in reversed(self.headers.items())}
        length = headers.get("content-length", "0")
        # isdigit() alone admits digits like '²' that int() refuses.
        digits = length.isascii() and length.isdigit()
        if "transfer-encoding" in headers or not digits or int(length) > _MAX_BODY:
            self._refuse(400, "request bodies need a Content-Length of at most 1 MiB")
            return
        body = self.rfile.read(int(length)) if int(length) else b""
        request = Request(
            self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, body
        )
        try:
            reply = self._server.app(request)
        except Exception as exc:  # a bug in the app must still produce an answer
            reply = Reply(500, f"emulator error: {type(exc).__name__}\n".encode())
        if reply.delay > 0 and self._server.closing.wait(reply.delay):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            return
        self._write(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


@dataclass(eq=False)
class _Tracking:
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: set[socket.socket] = field(default_factory=set)
    workers: set[threading.Thread] = field(default_factory=set)


class LoopbackServer(socketserver.TCPServer):
    """A thread-per-connection HTTP/1.1 server whose :meth:`close` is prompt and complete.

    Args:
        host: the address to listen on (IPv4 or IPv6 literal, or a name).
        port: the port; 0 picks a free one.
        app: answers each request.
        default_headers: sent on replies the app does not produce (malformed requests).
    """

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        host: str,
        port: int,
        app: App,
        *,
        default_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.default_headers = default_headers
        self.closing = threading.Event()
        self._tracking = _Tracking()
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        try:
            super().__init__((host, port), _Handler)
        except BaseException:
            self._wakeup_reader.close()
            self._wakeup_writer.close()
            raise
        self._loop = threading.Thread(
            target=self._accept_loop, name="s2sauth-emulator", daemon=True
        )

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self.socket.getsockname()[1])

    def start(self) -> None:
        """Start accepting connections on a daemon thread."""
        self._loop.start()

    def _accept_loop(self) -> None:
        # serve_forever() polls for shutdown every half second; waking on a
        # socketpair instead makes close() immediate, which keeps a per-test
        # emulator cheap.
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wakeup_reader, selectors.EVENT_READ)
            while not self.closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self.closing.is_set():
                        self._accept()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return  # the client gave up before we accepted
        self._spawn(request, client_address)

    def _spawn(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # One thread per connection, tracked so close() can end it.
        worker = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="s2sauth-emulator-connection",
            daemon=True,
        )
        with self._tracking.lock:
            self._tracking.connections.add(request)
            self._tracking.workers.add(worker)
        worker.start()

    def _serve_connection(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            # The client went away mid-reply, or a request broke the handler: either
            # way nothing is printed (see handle_error), and the connection just ends.
            pass
        finally:
            self.shutdown_request(request)
            with self._tracking.lock:
                self._tracking.connections.discard(request)
                self._tracking.workers.discard(threading.current_thread())

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay silent: a server that may hold tokens prints nothing."""

    def close(self) -> None:
        """Stop accepting, end every open connection and delay, join all threads."""
        if self.closing.is_set():
            return
        self.closing.set()
        self._wakeup_writer.send(b"\0")
        if self._loop.is_alive():
            self._loop.join()
        with self._tracking.lock:
            connections = list(self._tracking.connections)
            workers = list(self._tracking.workers)
        for connection in connections:
            try:
                # Wakes a worker blocked reading the next keep-alive request.
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for worker in workers:
            worker.join(_JOIN_TIMEOUT)
        self.server_close()
        self._wakeup_reader.close()
        self._wakeup_writer.close()
