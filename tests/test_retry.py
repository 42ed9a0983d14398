"""The one retry rule and backoff shared by the metadata server and key set fetches."""

from __future__ import annotations

import pytest

from s2sauth._retry import Backoff, is_retryable_status


@pytest.mark.parametrize("status", [408, 429, 500, 501, 502, 503, 504, 599])
def test_transient_statuses_are_retryable(status: int) -> None:
    """408, 429 and every 5xx are worth another attempt."""
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 407, 600])
def test_other_statuses_are_not_retryable(status: int) -> None:
    """Success, redirects and other client errors fail at once."""
    assert not is_retryable_status(status)


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    """The wait bound doubles per attempt up to the cap; the jitter scales it."""
    backoff = Backoff(deadline=100.0, started=0.0, base=0.05, cap=1.0)
    bounds = []
    for _ in range(8):
        backoff.begin_attempt(0.0, 3.0)
        delay = backoff.delay(0.0, 0.999999)
        assert delay is not None
        bounds.append(round(delay, 3))
    assert bounds == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert backoff.delay(0.0, 0.0) == 0.0
    assert backoff.delay(0.0, 0.5) == pytest.approx(0.5)


def test_backoff_stops_at_the_deadline() -> None:
    """No wait is offered that would leave no time for another attempt."""
    backoff = Backoff(deadline=1.0, started=10.0)
    backoff.begin_attempt(10.0, 3.0)
    assert backoff.delay(10.5, 0.5) is not None
    assert backoff.delay(10.995, 0.0) is None
    assert backoff.delay(11.2, 0.0) is None


def test_backoff_shortens_attempt_timeout_to_the_deadline() -> None:
    """An attempt never gets more time than the deadline leaves."""
    backoff = Backoff(deadline=5.0, started=0.0)
    assert backoff.begin_attempt(0.0, 3.0) == 3.0
    assert backoff.begin_attempt(4.0, 3.0) == 1.0
    assert backoff.attempts == 2


def test_backoff_stops_after_max_attempts() -> None:
    """With max_attempts, no wait is offered once that many attempts were made."""
    backoff = Backoff(deadline=100.0, started=0.0, max_attempts=2)
    backoff.begin_attempt(0.0, 3.0)
    assert backoff.delay(0.0, 0.5) is not None
    backoff.begin_attempt(0.0, 3.0)
    assert backoff.delay(0.0, 0.5) is None
