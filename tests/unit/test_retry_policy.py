"""RetryPolicy maths: fixed lists, exponential with cap and jitter, which errors retry."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow import Reject, RetryPolicy


class Transient(Exception):
    """An error worth retrying."""


class Fatal(Transient):
    """A subclass of a retryable error that must not be retried."""


def test_fixed_list_is_used_in_order_and_the_last_delay_repeats() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=[0.5, 2, 10])
    assert [policy.delay(a) for a in range(1, 7)] == [0.5, 2.0, 10.0, 10.0, 10.0, 10.0]
    assert policy.base_delay(0) == 0.5, "attempt numbers below 1 count as the first"


def test_empty_backoff_retries_immediately() -> None:
    policy = RetryPolicy(max_attempts=3, backoff=[])
    assert policy.delay(1) == policy.delay(5) == 0.0


def test_backoff_is_normalised_to_a_tuple_of_floats() -> None:
    policy = RetryPolicy(backoff=[1, 2])
    assert policy.backoff == (1.0, 2.0)
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_exponential_doubles_then_caps() -> None:
    policy = RetryPolicy.exponential(initial=0.5, multiplier=2, max_delay=5, jitter=0)
    assert [policy.delay(a) for a in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert policy.max_attempts == 5


@given(
    initial=st.floats(0, 10),
    multiplier=st.floats(1, 5),
    cap=st.floats(0, 100),
    attempt=st.integers(1, 60),
)
def test_exponential_never_exceeds_its_cap_and_never_shrinks(
    initial: float, multiplier: float, cap: float, attempt: int
) -> None:
    policy = RetryPolicy.exponential(initial, multiplier, cap, jitter=0)
    assert 0 <= policy.base_delay(attempt) <= cap
    assert policy.base_delay(attempt + 1) >= policy.base_delay(attempt)


def test_jitter_stays_within_bounds_and_actually_varies() -> None:
    policy = RetryPolicy.exponential(initial=1, multiplier=2, max_delay=100, jitter=0.2)
    samples = [policy.delay(3) for _ in range(5_000)]  # base 4.0
    assert all(3.2 <= s <= 4.8 for s in samples)
    assert min(samples) < 3.4 and max(samples) > 4.6, "the whole +/-20% band is used"
    assert statistics.fmean(samples) == pytest.approx(4.0, abs=0.05)


def test_jitter_applies_to_fixed_lists_too_but_not_to_zero_delays() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=[0, 10], jitter=0.5)
    assert {policy.delay(1) for _ in range(100)} == {0.0}
    samples = [policy.delay(2) for _ in range(1_000)]
    assert all(5.0 <= s <= 15.0 for s in samples)
    assert len(set(samples)) > 100


def test_should_retry_until_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, Transient())
    assert policy.should_retry(2, Transient())
    assert not policy.should_retry(3, Transient())
    assert not policy.should_retry(4, Transient())


def test_retry_on_limits_which_errors_retry() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=(Transient, TimeoutError))
    assert policy.should_retry(1, Transient())
    assert policy.should_retry(1, TimeoutError())
    assert not policy.should_retry(1, KeyError("x"))


def test_give_up_on_wins_over_retry_on() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=(Transient,), give_up_on=(Fatal,))
    assert policy.should_retry(1, Transient())
    assert not policy.should_retry(1, Fatal())
    exp = RetryPolicy.exponential(retry_on=(Transient,), give_up_on=(Fatal,))
    assert not exp.should_retry(1, Fatal())
    assert exp.should_retry(1, Transient())


def test_none_never_retries() -> None:
    policy = RetryPolicy.none()
    assert policy.max_attempts == 1
    assert not policy.should_retry(1, Transient())
    assert not policy.should_retry(1, Reject("x"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"backoff": [1, -0.5]}, "delays must be >= 0"),
        ({"jitter": 1.5}, r"jitter must be within \[0, 1\]"),
        ({"jitter": -0.1}, r"jitter must be within \[0, 1\]"),
    ],
)
def test_invalid_policies_are_value_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"multiplier": 0.5}, {"max_delay": -1}, {"jitter": 2}, {"max_attempts": 0}],
)
def test_invalid_exponential_policies_are_value_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy.exponential(**kwargs)  # type: ignore[arg-type]
