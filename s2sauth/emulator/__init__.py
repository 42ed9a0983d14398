"""A local stand-in for Google Cloud's metadata server and Google's signing-key endpoints.

:class:`Emulator` is a real HTTP server on loopback. It answers the metadata
protocol (``/computeMetadata/v1/...``) the way Cloud Run and Compute Engine do,
mints RS256 ID tokens shaped like Google's, and serves the keys that verify them
as a JWKS (``/oauth2/v3/certs``) and as PEM certificates (``/oauth2/v1/certs``)::

    from s2sauth.emulator import Emulator

    with Emulator(["caller@demo-project.iam.gserviceaccount.com"]) as em:
        os.environ.update(em.environ())   # GCE_METADATA_HOST, S2SAUTH_CERTS_URL, ...
        token = IDTokenProvider().token("https://svc.example")
        caller = Verifier(audience="https://svc.example", certs_url=em.jwks_url).verify(token)

For tests it also rotates and retires keys, shifts its clock, counts requests
per endpoint and injects faults (delays, status codes, garbage bodies, dropped
connections, a missing ``Metadata-Flavor``). ``s2sauth emulator`` runs one in
the foreground. Production code never imports this package.
"""

from __future__ import annotations

from ._emulator import Emulator, FaultBody, FaultTarget

__all__ = ["Emulator", "FaultBody", "FaultTarget"]
