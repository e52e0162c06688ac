from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from browserbase_async import APIConnectionError, APITimeoutError, RetryPolicy
from browserbase_async._errors import for_status
from browserbase_async._retry import RetryBudget, is_retryable, retry_after


def status_error(status: int, **headers: str) -> BaseException:
    error = for_status(status, headers, b"")
    assert error is not None
    return error


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501])
def test_other_statuses_are_final(status: int) -> None:
    assert not is_retryable(status_error(status))


def test_the_server_may_say_no_or_yes() -> None:
    assert not is_retryable(status_error(503, **{"x-should-retry": "false"}))
    assert is_retryable(status_error(400, **{"x-should-retry": "true"}))


def test_transport_failures_are_retryable_other_errors_are_not() -> None:
    assert is_retryable(APIConnectionError("dropped"))
    assert is_retryable(APITimeoutError("slow"))
    assert not is_retryable(ValueError("bad id"))


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)
    assert retry_after({}) is None
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after": "-3"}) == 0.0
    date = "Sat, 28 Nov 2026 09:00:30 GMT"
    assert retry_after({"retry-after": date}, now=now) == 30.0
    assert retry_after({"retry-after": "Sat, 28 Nov 2026 08:00:00 GMT"}, now=now) == 0.0
    assert retry_after({"retry-after": "tomorrow"}) is None
    assert retry_after({"retry-after": "Sat, 28 Nov 2026 09:00:30"}) is None


@pytest.mark.parametrize("garbage", ["nan", "NaN", "-nan"])
def test_a_nan_wait_is_not_asked(garbage: str) -> None:
    # float() reads "nan": taken as asked, it would turn every backoff into an instant retry
    # (the wait hook yields to a pause that NaN never opens) and hide a valid Retry-After.
    assert retry_after({"retry-after": garbage}) is None
    assert retry_after({"retry-after-ms": garbage}) is None
    assert retry_after({"retry-after-ms": garbage, "retry-after": "9"}) == 9.0
    assert is_retryable(status_error(503, **{"retry-after": garbage}))


def test_policy_defaults_match_the_contract() -> None:
    policy = RetryPolicy()
    assert attrs.asdict(policy) == {
        "max_attempts": 3,
        "initial_delay": 0.5,
        "max_delay": 8.0,
        "max_retry_after": 60.0,
        "budget_ratio": 0.2,
        "budget_min_per_second": 10.0,
        "max_rate_limited": 10,
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": -1.0},
        {"max_delay": -0.1},
        {"budget_ratio": -1.0},
        {"max_retry_after": -1.0},
        {"budget_min_per_second": -0.5},
        {"max_rate_limited": -1},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(st.integers(min_value=1, max_value=200))
def test_backoff_is_full_jitter_under_the_cap(attempt: int) -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    assert 0.0 <= policy.backoff(attempt) <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_backoff_spreads_over_its_whole_range_and_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    random.seed(20261130)  # a seeded draw: the same figures every run
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        draws = [policy.backoff(attempt) for _ in range(2000)]
        # Full jitter: uniform over [0, ceiling], so spread from near 0 to near the ceiling,
        # with its mean at half of it; the ceiling doubles each attempt, up to max_delay.
        assert min(draws) < 0.01 * ceiling
        assert 0.99 * ceiling < max(draws) <= ceiling
        assert statistics.fmean(draws) == pytest.approx(ceiling / 2, rel=0.05)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_starts_with_one_second_of_allowance() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, 10.0, clock)
    assert sum(budget.try_withdraw() for _ in range(20)) == 10


def test_budget_earns_a_ratio_of_first_attempts() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, 0.0, clock)
    for _ in range(50):
        budget.deposit()
    # Without a per-second floor, the bucket holds a single token.
    assert sum(budget.try_withdraw() for _ in range(20)) == 1
    budget = RetryBudget(0.2, 10.0, clock)
    while budget.try_withdraw():
        pass
    for _ in range(50):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(20)) == 10


def test_budget_refills_with_time_up_to_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, 10.0, clock)
    while budget.try_withdraw():
        pass
    clock.now += 0.5
    assert sum(budget.try_withdraw() for _ in range(20)) == 5
    clock.now += 3600
    assert sum(budget.try_withdraw() for _ in range(1000)) == 100
