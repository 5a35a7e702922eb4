"""retry.backoff, the one back-off of the pipeline, over tables of cases."""

from __future__ import annotations

import pytest

from pipeline.core import retry, settings

PLAIN = retry.RetryPolicy(base_seconds=1.0, cap_seconds=60.0, max_retries=5, jitter=False)
JITTERED = retry.RetryPolicy(base_seconds=4.0, cap_seconds=60.0, max_retries=5)
SLOW = retry.RetryPolicy(base_seconds=7200.0, cap_seconds=7200.0, max_retries=1, jitter=False)


@pytest.mark.parametrize(
    ("case", "policy", "attempt", "retry_after", "draw", "expected"),
    [
        ("exponential: first retry waits the base", PLAIN, 0, 0.0, 0.0, 1.0),
        ("exponential: doubles", PLAIN, 1, 0.0, 0.0, 2.0),
        ("exponential: doubles again", PLAIN, 2, 0.0, 0.0, 4.0),
        ("exponential: below the cap", PLAIN, 5, 0.0, 0.0, 32.0),
        ("cap", PLAIN, 6, 0.0, 0.0, 60.0),
        ("cap: a huge attempt does not overflow", PLAIN, 10_000, 0.0, 0.0, 60.0),
        ("jitter: draw 0 gives half the delay", JITTERED, 0, 0.0, 0.0, 2.0),
        ("jitter: draw 0.5 gives three quarters", JITTERED, 0, 0.0, 0.5, 3.0),
        ("jitter: draw near 1 gives nearly all", JITTERED, 0, 0.0, 0.999, 3.998),
        ("jitter: spread below the cap", JITTERED, 10, 0.0, 0.0, 30.0),
        ("jitter off: the draw is ignored", PLAIN, 2, 0.0, 0.9, 4.0),
        ("retry_after honoured when longer", PLAIN, 0, 30.0, 0.0, 30.0),
        ("retry_after honoured beyond the cap", PLAIN, 10, 120.0, 0.0, 120.0),
        ("retry_after shorter than the delay", PLAIN, 3, 2.0, 0.0, 8.0),
        ("retry_after capped at an hour", PLAIN, 0, 86_400.0, 0.0, 3600.0),
        ("a policy longer than an hour still wins", SLOW, 0, 86_400.0, 0.0, 7200.0),
    ],
)
def test_backoff(
    case: str,
    policy: retry.RetryPolicy,
    attempt: int,
    retry_after: float,
    draw: float,
    expected: float,
) -> None:
    assert retry.backoff(attempt, policy, retry_after=retry_after, draw=draw) == pytest.approx(
        expected
    ), case


@pytest.mark.parametrize(
    ("attempt", "draw", "message"),
    [(-1, 0.0, "attempt"), (0, 1.0, "draw"), (0, -0.1, "draw"), (0, 1.5, "draw")],
)
def test_bad_inputs_are_rejected(attempt: int, draw: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retry.backoff(attempt, JITTERED, draw=draw)


# The build task's and `layering build`'s back-off (formerly builds.retry_delay): base 2 s,
# capped at 300 s, equal jitter.
@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(0, 0.0, 1.0), (0, 0.999, 1.999), (1, 0.0, 2.0), (3, 0.5, 12.0), (20, 0.0, 150.0)],
)
def test_build_policy_backs_off_exponentially_with_jitter_and_a_cap(
    attempt: int, jitter: float, expected: float
) -> None:
    policy = settings.Settings(
        retry_backoff_seconds=2.0, retry_backoff_cap_seconds=300
    ).retry_policy("build")
    assert retry.backoff(attempt, policy, draw=jitter) == pytest.approx(expected)


def test_build_policy_numbers_come_from_settings() -> None:
    configured = settings.Settings(
        registry_retries=3, retry_backoff_seconds=0.5, retry_backoff_cap_seconds=10
    )
    assert configured.retry_policy("build") == retry.RetryPolicy(0.5, 10, 3)
