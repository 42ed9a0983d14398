"""When a failed HTTP call is worth another try, and how long to wait first.

One rule and one backoff for every fetch of both cores (metadata server, key set):
:func:`is_retryable_status` says which replies are transient, and :class:`Backoff`
paces the attempts inside a total deadline. Both are sans-IO: the caller passes in
the time and a random number, and does the sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth another attempt: 408, 429 and every 5xx."""
    return status in (408, 429) or 500 <= status <= 599


@dataclass
class Backoff:
    """When to try again: exponential backoff with full jitter inside a total deadline.

    Sans-IO: the caller passes in the monotonic time and a random number and
    does the sleeping. Attempt ``n`` (from 1) that failed is followed by a wait
    drawn uniformly from ``[0, min(cap, base * 2**(n-1)))``, unless that wait
    would leave no time for another attempt before the deadline, or
    ``max_attempts`` have been made.

    Args:
        deadline: total seconds for all attempts and waits together.
        started: monotonic time of the first attempt.
        base: the first wait's upper bound.
        cap: the largest upper bound.
        max_attempts: most attempts in all (``None``: as many as the deadline allows).
    """

    deadline: float
    started: float
    base: float = 0.05
    cap: float = 1.0
    max_attempts: int | None = None
    attempts: int = 0

    #: An attempt is not started with less time than this left: it could not succeed.
    MIN_ATTEMPT_TIME = 0.01

    def begin_attempt(self, now: float, timeout: float) -> float:
        """Count an attempt; return its timeout, shortened to what the deadline leaves."""
        self.attempts += 1
        return max(self.MIN_ATTEMPT_TIME, min(timeout, self.started + self.deadline - now))

    def delay(self, now: float, rand: float) -> float | None:
        """The wait before the next attempt, or ``None`` to give up.

        Args:
            now: the monotonic time now.
            rand: a uniform random number in ``[0, 1)``.
        """
        if self.max_attempts is not None and self.attempts >= self.max_attempts:
            return None
        wait = rand * min(self.cap, self.base * 2.0 ** (self.attempts - 1))
        if now + wait + self.MIN_ATTEMPT_TIME > self.started + self.deadline:
            return None
        return wait
