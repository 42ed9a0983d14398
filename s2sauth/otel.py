"""OpenTelemetry for s2sauth: spans around key and token fetches, counters for outcomes.

Off until :func:`enable` is called; until then s2sauth never imports OpenTelemetry.
Install the extra, ``pip install 's2sauth[otel]'``, configure your SDK as usual,
then call ``s2sauth.otel.enable()`` once at startup. What is recorded is listed
in :mod:`s2sauth._otel`; no token is ever put in a span, event or attribute.
"""

from __future__ import annotations

from typing import Any

from . import _otel

__all__ = ["disable", "enable"]


def enable(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Start recording spans and counters through OpenTelemetry.

    Use it once at startup, after configuring the OpenTelemetry SDK.

    Args:
        tracer_provider: the provider to get s2sauth's tracer from; the global one
            when ``None``.
        meter_provider: likewise for the meter.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (the ``otel`` extra).
    """
    try:
        from opentelemetry import metrics, trace
    except ModuleNotFoundError as exc:
        raise ImportError("s2sauth.otel needs OpenTelemetry: pip install 's2sauth[otel]'") from exc
    from . import __version__

    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("s2sauth", __version__)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("s2sauth", __version__)
    _otel.active = _otel.Instruments(tracer, meter)


def disable() -> None:
    """Stop recording (the providers are left as they are)."""
    _otel.active = None
