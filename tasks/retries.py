"""When a failed task is worth another try: only for transient store and network faults.

A bad URI, a missing key or version, a damaged bundle, bad data, failed validation or a bad config fails the
same way every time, so it fails at once (and the CLI prints it once) instead of after every retry delay.
Transient: a lost conditional write (ConflictError), and a StoreError or a plain exception whose cause chain
holds a transport fault (connection reset or refused, timeout, S3 5xx or throttling) that outlived the S3
client's own retries. An exception may decide for itself with a boolean `transient` attribute.

Use: @task(..., **io_retries([1, 3])) or retries=2, retry_delay_seconds=[1, 3], retry_condition_fn=retry_transient.
"""

from __future__ import annotations

import errno
from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from musicrec.errors import ConflictError, MusicrecError, StoreError
from musicrec.store import MissingKeyError

TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ESTALE,
    errno.EBUSY,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
}
BOTO_TRANSIENT = {
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ConnectionError",
    "HTTPClientError",
    "ResponseStreamingError",
    "IncompleteReadError",
}
S3_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeTooSkewed",
}


def is_transient(exc: BaseException) -> bool:
    """True if running the same task again may succeed."""
    explicit = getattr(exc, "transient", None)
    if isinstance(explicit, bool):
        return explicit
    if isinstance(exc, ConflictError):
        return True
    if isinstance(exc, MusicrecError) and (not isinstance(exc, StoreError) or _definite(exc)):
        return False  # DataError, ValidationFailed, ConfigError, a missing key or a damaged bundle
    return any(_transport_fault(e) for e in _chain(exc))


def _definite(exc: StoreError) -> bool:
    """Store errors that are a verdict, not a hiccup: the key is absent, or the bundle fails its checks."""
    from musicrec.scoring.bundle import BundleDamaged

    return isinstance(exc, (MissingKeyError, BundleDamaged))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _transport_fault(exc: BaseException) -> bool:
    if type(exc).__module__.startswith("botocore"):
        if type(exc).__name__ in BOTO_TRANSIENT:
            return True
        response = getattr(exc, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or response.get("Error", {}).get("Code") in S3_TRANSIENT_CODES
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def retry_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect 3 retry_condition_fn(task, task_run, state): retry a failed run only for a transient error."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def io_retries(delays: list[int | float]) -> dict[str, Any]:
    """Task options for I/O: one retry per delay, transient errors only."""
    return {
        "retries": len(delays),
        "retry_delay_seconds": list(delays),
        "retry_condition_fn": retry_transient,
    }
