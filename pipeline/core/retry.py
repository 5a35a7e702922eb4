"""The one retry back-off of the pipeline: exponential from a base, capped, optionally spread by
jitter, and never sooner than the server asked (TemporaryError.retry_after). Every number comes
from Settings (`Settings.retry_policy`). No I/O: the caller passes the random draw."""

from __future__ import annotations

from dataclasses import dataclass

# A server asking for more than an hour (a broken Retry-After) is not waited for longer.
RETRY_AFTER_CAP_SECONDS = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` retries after the first attempt; retry n waits about base * 2**n seconds,
    at most `cap_seconds`; with `jitter` the wait is spread over [delay/2, delay) so that
    workers that failed together do not retry together ("equal jitter")."""

    base_seconds: float
    cap_seconds: float
    max_retries: int
    jitter: bool = True


def backoff(
    attempt: int, policy: RetryPolicy, *, retry_after: float = 0.0, draw: float = 0.0
) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry). `draw` is a random
    number in [0, 1) used for jitter; `retry_after` is the server's own hint, if any."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0 <= draw < 1:
        raise ValueError("draw must be in [0, 1)")
    delay = min(policy.cap_seconds, policy.base_seconds * 2.0 ** min(attempt, 32))
    if policy.jitter:
        delay = delay / 2 + delay / 2 * draw
    return max(min(retry_after, RETRY_AFTER_CAP_SECONDS), delay)
