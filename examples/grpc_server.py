"""A gRPC service that lets in only allowed callers with a Google ID token.

No protobuf code is generated here: one generic handler, ``/greeter.Greeter/SayHello``,
takes and returns bytes. A real service registers its generated servicers the same way,
behind the same interceptor.

Configuration, from the environment:

* ``AUDIENCE``: this service's URL as its callers address it (the tokens' ``aud``):
  ``https://`` and the host (and port, unless 443) the clients dial;
* ``ALLOWED_CALLERS``: comma-separated emails of the service accounts let in;
* ``PORT``: where to listen (Cloud Run sets it; 8080 otherwise).

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=https://localhost:8080 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        python examples/grpc_server.py                                # shell 2
    TARGET=localhost:8080 python examples/grpc_client.py              # shell 3

On Cloud Run, deploy it with ``--use-http2`` (gRPC end to end) as its own service
account, ``AUDIENCE`` set to the service's URL (``https://SERVICE-xyz.a.run.app``). It
listens in plaintext HTTP/2: Cloud Run terminates TLS in front of it.
"""

from __future__ import annotations

import logging
import os
from concurrent import futures

import grpc

from s2sauth import Verifier
from s2sauth.grpc import IDTokenInterceptor, current_caller


def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
    """Greet the verified caller."""
    return f"hello, {current_caller().email}".encode()


def create_server(address: str) -> grpc.Server:
    """The service, not started yet, listening on ``address`` in plaintext HTTP/2."""
    verifier = Verifier(
        os.environ["AUDIENCE"], allowed_callers=os.environ["ALLOWED_CALLERS"].split(",")
    )
    # The interceptor comes first; grpc.health.v1.Health (for probes) needs no token.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[IDTokenInterceptor(verifier=verifier)],
    )
    greeter: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello)
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("greeter.Greeter", greeter),)
    )
    server.add_insecure_port(address)
    return server


def main() -> None:
    """Serve on $PORT until stopped."""
    logging.basicConfig(level=logging.INFO)  # one INFO line per refused call, on "s2sauth"
    server = create_server(f"[::]:{os.environ.get('PORT', '8080')}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
