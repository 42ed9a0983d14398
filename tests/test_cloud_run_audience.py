"""Cloud Run's own audience: worked out from K_SERVICE and the metadata server (the emulator),
plus custom audiences from the environment; a clear error off Cloud Run."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_inbound_adapters import uvicorn_server

from s2sauth import ConfigurationError, KeyFetchError, Verifier
from s2sauth._http import HTTPRequest, HTTPTransport
from s2sauth.asgi import IDTokenMiddleware
from s2sauth.emulator import Emulator
from s2sauth.verify.audience import CloudRunAudience

CALLER = "caller@demo-project.iam.gserviceaccount.com"
RUN_URL = "https://orders-123456789012.europe-west1.run.app"


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """An emulator standing in for Cloud Run's metadata server in europe-west1."""
    with Emulator(CALLER, signing_key=emulator_key, region="europe-west1") as running:
        yield running


def cloud_run(emulator: Emulator, **extra: str) -> dict[str, str]:
    return {"K_SERVICE": "orders", "GCE_METADATA_HOST": emulator.host, **extra}


def test_emulator_serves_instance_facts_in_the_real_formats(emulator: Emulator) -> None:
    """instance/region, instance/zone, instance/id and project/numeric-project-id."""
    pool = HTTPTransport()

    def get(path: str) -> str:
        url = f"{emulator.url}/computeMetadata/v1/{path}"
        reply = pool(HTTPRequest("GET", url, {"Metadata-Flavor": "Google"}))
        assert reply.status == 200 and reply.header("metadata-flavor") == "Google"
        return reply.text

    try:
        assert get("instance/region") == "projects/123456789012/regions/europe-west1"
        assert get("instance/zone") == "projects/123456789012/zones/europe-west1-1"
        assert get("project/numeric-project-id") == "123456789012"
        instance_id = get("instance/id")
        assert len(instance_id) > 64 and all(c in "0123456789abcdef" for c in instance_id)
    finally:
        pool.close()


def test_resolves_the_run_app_url_and_custom_audiences(emulator: Emulator) -> None:
    """SERVICE-PROJECT_NUMBER.REGION.run.app first, then $S2SAUTH_AUDIENCES, deduplicated."""
    audience = CloudRunAudience(
        environ=cloud_run(emulator, S2SAUTH_AUDIENCES=f" https://orders.example.com ,{RUN_URL},")
    )
    assert audience.resolve() == (RUN_URL, "https://orders.example.com")


def test_constructing_does_no_io(emulator: Emulator) -> None:
    """Neither CloudRunAudience nor the Verifier asks the metadata server until used."""
    emulator.reset_counters()
    verifier = Verifier(
        CloudRunAudience(environ=cloud_run(emulator)),
        allowed_callers=[CALLER],
        certs_url=emulator.jwks_url,
    )
    assert emulator.counters["other"] == emulator.counters["project"] == 0
    assert verifier.resolve_audiences() == {RUN_URL}
    assert verifier.verify(emulator.mint(RUN_URL)).email == CALLER


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "K_SERVICE is not set"),
        ({"K_SERVICE": "Not_A_Service"}, "not a Cloud Run service name"),
        ({"K_SERVICE": "orders", "GCE_METADATA_HOST": "127.0.0.1:9"}, "could not reach"),
    ],
)
def test_off_cloud_run_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    """Off Cloud Run, resolve_audiences says why, at startup."""
    verifier = Verifier(
        CloudRunAudience(environ=environ),
        allowed_callers=[CALLER],
        certs_url="http://127.0.0.1:9/c",
    )
    with pytest.raises(ConfigurationError, match=message):
        verifier.resolve_audiences()


def test_a_metadata_server_that_is_not_cloud_runs(emulator: Emulator) -> None:
    """A region path in another shape (say, a GCE zone-only host) is refused with the value."""

    def fake(request: HTTPRequest) -> object:
        from s2sauth._http import HTTPResponse

        return HTTPResponse(200, {"metadata-flavor": "Google"}, b"us-central1")

    audience = CloudRunAudience(environ={"K_SERVICE": "orders"}, transport=fake)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="projects/NUMBER/regions/REGION"):
        audience.resolve()


def test_unresolvable_audience_is_503_on_first_request(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Without resolve_audiences at startup, a failure answers 503 (logged), never a 500 or 401."""

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"email": request.state.caller.email})

    broken = Verifier(
        CloudRunAudience(environ={}), allowed_callers=[CALLER], certs_url=emulator.jwks_url
    )
    working = Verifier(
        CloudRunAudience(environ=cloud_run(emulator)),
        allowed_callers=[CALLER],
        certs_url=emulator.jwks_url,
    )
    token = emulator.mint(RUN_URL)
    with caplog.at_level(logging.ERROR, logger="s2sauth"):
        with uvicorn_server(
            IDTokenMiddleware(Starlette(routes=[Route("/", hello)]), verifier=broken)
        ) as url:
            response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert "K_SERVICE is not set" in caplog.text
    with pytest.raises(KeyFetchError):
        broken.verify(token)
    with uvicorn_server(
        IDTokenMiddleware(Starlette(routes=[Route("/", hello)]), verifier=working)
    ) as url:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.json() == {"email": CALLER}
        other = httpx.get(url, headers={"Authorization": f"Bearer {emulator.mint('https://x')}"})
        assert other.status_code == 401
