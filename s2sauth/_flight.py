"""Single flight: at most one call per key in progress, shared by every thread and task.

Both cores need the same thing: when a cached value (an ID token, a key set) is
missing or expired and a hundred requests ask for it at the same moment, exactly
one fetch runs and everybody gets its outcome. The coordination point is a
``concurrent.futures.Future`` per key, which threads wait on directly and
asyncio/trio tasks await (see :func:`~s2sauth._http.wait_future`), so a thread
and a task asking together still share one fetch.

Blocking work for async callers, and refresh-ahead work for anyone, runs on a
small thread pool of the flight's own job (:data:`TOKENS` or :data:`KEYS`), so
that a hung metadata server cannot hold up key fetches, nor the other way round;
the event loop never does I/O.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from ._http import wait_future

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger("s2sauth")

#: The pool of outbound token fetches (metadata server, ADC). Its size also bounds how
#: many token fetches for async callers and background refreshes run at once.
TOKENS = "tokens"
#: The pool of inbound key fetches: never shared with token fetches.
KEYS = "keys"
_POOL_SIZES = {TOKENS: 4, KEYS: 4}

_pools_lock = threading.Lock()
_pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def pool(name: str) -> concurrent.futures.Executor:
    """The thread pool of one job (:data:`TOKENS` or :data:`KEYS`), started on first use."""
    with _pools_lock:
        executor = _pools.get(name)
        if executor is None:
            executor = _pools[name] = concurrent.futures.ThreadPoolExecutor(
                max_workers=_POOL_SIZES[name], thread_name_prefix=f"s2sauth-{name}"
            )
        return executor


class SingleFlight(Generic[K, V]):
    """Coalesce concurrent calls per key across threads and asyncio/trio tasks.

    Args:
        executor: where work for async callers and background calls runs; by
            default the pool named ``pool_name``.
        pool_name: :data:`TOKENS` or :data:`KEYS`.
    """

    def __init__(
        self, *, pool_name: str = TOKENS, executor: concurrent.futures.Executor | None = None
    ) -> None:
        self._executor = executor
        self._pool_name = pool_name
        self._lock = threading.Lock()
        self._calls: dict[K, concurrent.futures.Future[V]] = {}

    def running(self, key: K) -> concurrent.futures.Future[V] | None:
        """The call for ``key`` in progress, to wait on without starting one (or ``None``)."""
        with self._lock:
            return self._calls.get(key)

    def do(self, key: K, fn: Callable[[], V]) -> V:
        """Run ``fn`` for ``key`` on this thread, or wait for the call already running."""
        future, owner = self._claim(key)
        if owner:
            self._complete(key, future, fn)
        return future.result()

    async def ado(self, key: K, fn: Callable[[], V]) -> V:
        """Like :meth:`do` for async callers: ``fn`` runs in a worker thread.

        Cancelling one waiter never cancels the call for the others, and a call
        whose owner was cancelled still completes and resolves every waiter.
        """
        future, owner = self._claim(key)
        if owner:
            self._submit(key, future, fn)
        return await wait_future(future)

    def start(self, key: K, fn: Callable[[], V]) -> bool:
        """Start ``fn`` in the background unless a call for ``key`` is running.

        Returns whether a new call was started. The outcome is not waited for;
        a failure is logged and otherwise dropped (the caller keeps what it has).
        """
        future, owner = self._claim(key)
        if not owner:
            return False
        self._submit(key, future, fn)
        # Consume the outcome so an exception is never reported as "never retrieved".
        future.add_done_callback(_log_background_failure)
        return True

    def _claim(self, key: K) -> tuple[concurrent.futures.Future[V], bool]:
        with self._lock:
            future = self._calls.get(key)
            if future is not None:
                return future, False
            future = concurrent.futures.Future()
            # A running future cannot be cancelled, so no waiter can cancel it for all.
            future.set_running_or_notify_cancel()
            self._calls[key] = future
            return future, True

    def _submit(self, key: K, future: concurrent.futures.Future[V], fn: Callable[[], V]) -> None:
        executor = self._executor if self._executor is not None else pool(self._pool_name)
        try:
            executor.submit(self._complete, key, future, fn)
        except BaseException as exc:
            # No worker could start ("can't start new thread"): release the claim and
            # wake every waiter, or the key would stay claimed by a call that never runs.
            # The work item may still be queued and run later: _complete then sees its
            # future finished and does nothing.
            self._release(key, future)
            future.set_exception(exc)
            raise

    def _complete(self, key: K, future: concurrent.futures.Future[V], fn: Callable[[], V]) -> None:
        if future.done():  # given up on when its worker could not start
            return
        try:
            result = fn()
        except BaseException as exc:
            self._release(key, future)
            future.set_exception(exc)
        else:
            self._release(key, future)
            future.set_result(result)

    def _release(self, key: K, future: concurrent.futures.Future[V]) -> None:
        # Only the claim's owner removes it: a later call may hold the key by now.
        with self._lock:
            if self._calls.get(key) is future:
                del self._calls[key]


def _log_background_failure(future: concurrent.futures.Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        logger.debug("background refresh failed: %s", exc)
