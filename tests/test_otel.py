"""OpenTelemetry: spans around fetches and counters for outcomes, read in memory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from s2sauth import (
    CallerNotAllowedError,
    ExpiredTokenError,
    IDTokenProvider,
    MetadataServerSource,
    Verifier,
    otel,
)
from s2sauth.emulator import Emulator

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"


@pytest.fixture
def telemetry() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """OpenTelemetry enabled with in-memory exporters, disabled afterwards."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    otel.enable(tracer_provider=tracer_provider, meter_provider=MeterProvider([metrics]))
    try:
        yield spans, metrics
    finally:
        otel.disable()


def _counts(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[Any, ...]], int]:
    data = reader.get_metrics_data()
    counts: dict[tuple[str, tuple[Any, ...]], int] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted(point.attributes.items())))
                    counts[key] = int(point.value)
    return counts


def test_verification_outcomes_fetches_and_cache_hits_are_counted(
    emulator: Emulator, telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """Accepted, refused (by reason), key fetches and verified-token cache hits are counted."""
    spans, metrics = telemetry
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    token = emulator.mint(AUDIENCE, account=CALLER)
    verifier.verify(token)
    verifier.verify(token)
    with pytest.raises(CallerNotAllowedError):
        verifier.verify(emulator.mint(AUDIENCE, account=STRANGER))
    with pytest.raises(ExpiredTokenError):
        now = int(time.time())
        expired = {"iat": now - 7200, "exp": now - 3600}
        verifier.verify(emulator.mint(AUDIENCE, account=CALLER, claims=expired))
    counts = _counts(metrics)
    assert counts[("s2sauth.verifications", (("outcome", "accepted"), ("reason", "ok")))] == 3
    refused = ("s2sauth.verifications", (("outcome", "refused"), ("reason", "expired")))
    assert counts[refused] == 1
    status = "http.response.status_code"
    assert counts[("s2sauth.refusals", ((status, 403), ("reason", "caller_not_allowed")))] == 1
    assert counts[("s2sauth.cache_hits", (("cache", "verified_tokens"),))] == 1
    assert counts[("s2sauth.fetches", (("kind", "keys"), ("outcome", "ok")))] == 1
    (span,) = spans.get_finished_spans()
    assert (span.name, span.attributes) == ("s2sauth.keys.fetch", {"url.full": emulator.jwks_url})


def test_token_fetch_has_the_metadata_server_as_its_own_span(
    emulator: Emulator, telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """A token fetch is a span with the metadata server's call as a child; hits are counted."""
    spans, metrics = telemetry
    provider = IDTokenProvider(MetadataServerSource(host=emulator.host))
    token = provider.token(AUDIENCE)
    provider.token(AUDIENCE)
    inner, outer = spans.get_finished_spans()
    assert (outer.name, inner.name) == ("s2sauth.token.fetch", "s2sauth.metadata_server")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert inner.attributes == {"server.address": emulator.host}
    counts = _counts(metrics)
    assert counts[("s2sauth.cache_hits", (("cache", "tokens"),))] == 1
    assert counts[("s2sauth.fetches", (("kind", "metadata_server"), ("outcome", "ok")))] == 1
    assert counts[("s2sauth.fetches", (("kind", "token"), ("outcome", "ok")))] == 1
    exported = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    assert token not in exported and token.split(".")[2] not in exported


def test_a_failed_fetch_is_an_error_span_and_count(
    telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    """A key fetch that fails ends its span in error and counts an error fetch."""
    from s2sauth import KeyFetchError

    spans, metrics = telemetry
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url="http://127.0.0.1:9/certs")
    with pytest.raises(KeyFetchError):
        verifier.warm()
    (span,) = spans.get_finished_spans()
    assert not span.status.is_ok
    assert _counts(metrics)[("s2sauth.fetches", (("kind", "keys"), ("outcome", "error")))] == 1


def test_disabled_records_nothing(emulator: Emulator) -> None:
    """Without enable(), nothing is recorded (the hooks are inert)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    otel.enable(tracer_provider=tracer_provider, meter_provider=MeterProvider())
    otel.disable()
    Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url).warm()
    assert spans.get_finished_spans() == ()
