"""Call a gRPC service with grpc.aio, every call carrying a Google ID token for it.

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=https://localhost:8080 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        python examples/grpc_server.py                                # shell 2
    TARGET=localhost:8080 python examples/grpc_client.py              # shell 3

On Cloud Run, ``TARGET`` is the receiver's host and port, ``SERVICE-xyz.a.run.app:443``:
the token's audience is then ``https://SERVICE-xyz.a.run.app``, as Cloud Run expects,
and the channel uses TLS. The caller runs as its own service account, which the
receiver grants ``roles/run.invoker``; the metadata server mints the token.
"""

from __future__ import annotations

import asyncio
import os

import grpc

from s2sauth.grpc.aio import secure_channel

TARGET = os.environ.get("TARGET", "localhost:8080")
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


async def main() -> None:
    """Call SayHello on TARGET once and print the reply."""
    host = TARGET.rpartition(":")[0]
    # TLS, except on this machine, where local credentials still allow sending tokens.
    credentials = grpc.local_channel_credentials() if host in _LOOPBACK else None
    async with secure_channel(TARGET, credentials=credentials) as channel:
        say_hello: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        say_hello = channel.unary_unary("/greeter.Greeter/SayHello")
        reply = await say_hello(b"", timeout=10)
    print(reply.decode())


if __name__ == "__main__":
    asyncio.run(main())
