"""When and how long to retry: the policy, the shared retry budget, the tenacity wiring.

tenacity does the looping; nothing of it leaves this module. The decisions are
made by small functions over our own exceptions, so that they can be tested
without a server.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol, TypeVar

import attrs
import tenacity as _t

from ._config import check_positive, check_positive_int
from ._errors import (
    APICertificateError,
    APIConnectionError,
    APIStatusError,
    ProxyAuthenticationError,
    RateLimitError,
    printable,
)

logger: Final = logging.getLogger("browserbase_async")

RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})
BUDGET_WINDOW: Final = 10.0
"""Seconds of ``budget_min_per_second`` the retry budget can save up."""

DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_INITIAL_DELAY: Final = 0.5
DEFAULT_MAX_DELAY: Final = 8.0
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
DEFAULT_BUDGET_RATIO: Final = 0.2
DEFAULT_BUDGET_MIN_PER_SECOND: Final = 10.0
DEFAULT_MAX_RATE_LIMITED: Final = 10

_R = TypeVar("_R")


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_positive_int(attribute.name, value)


def _count(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be a whole number >= 0, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_positive(attribute.name, value, allow_zero=True)


@attrs.frozen
class RetryPolicy:
    """How a client retries a failed request.

    All durations are seconds, as ``float``.

    Args:
        max_attempts: Attempts per call, the first one included; 1 turns retries off.
        initial_delay: The first backoff ceiling; it doubles each attempt, and the
            sleep is drawn uniformly below it ("full jitter").
        max_delay: The largest ceiling of one backoff sleep.
        max_retry_after: The longest wait a server may ask for with
            ``Retry-After``/``retry-after-ms``; a longer one fails the call at once.
        budget_ratio: Retries allowed per first attempt, across all the calls of
            one client (0.2: one retry per five calls).
        budget_min_per_second: Retries always allowed per second, whatever the
            ratio, so that a quiet client can still retry.
        max_rate_limited: 429s a call may receive without using up an attempt
            (each shrinks the client's window, and the call waits for a place in
            it); one more raises `RateLimitError`. 0 raises on the first 429.
    """

    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, validator=_at_least_one)
    initial_delay: float = attrs.field(default=DEFAULT_INITIAL_DELAY, validator=_non_negative)
    max_delay: float = attrs.field(default=DEFAULT_MAX_DELAY, validator=_non_negative)
    max_retry_after: float = attrs.field(default=DEFAULT_MAX_RETRY_AFTER, validator=_non_negative)
    budget_ratio: float = attrs.field(default=DEFAULT_BUDGET_RATIO, validator=_non_negative)
    budget_min_per_second: float = attrs.field(
        default=DEFAULT_BUDGET_MIN_PER_SECOND, validator=_non_negative
    )
    max_rate_limited: int = attrs.field(default=DEFAULT_MAX_RATE_LIMITED, validator=_count)

    def backoff(self, attempt: int) -> float:
        """Return a backoff sleep, in seconds, after failed attempt number *attempt*.

        Full jitter: uniform between 0 and ``min(max_delay, initial_delay * 2 ** (attempt - 1))``.
        """
        ceiling = min(self.max_delay, self.initial_delay * 2 ** min(attempt - 1, 62))
        return random.uniform(0.0, ceiling)


DEFAULT_RETRY_POLICY: Final = RetryPolicy()


@attrs.define
class RetryBudget:
    """A token bucket shared by all the calls of one client.

    Each first attempt deposits ``ratio`` tokens, time adds ``min_per_second``
    tokens a second, and each retry takes one; with less than one token, the
    call fails with its last error instead of retrying. The bucket holds at
    most `BUDGET_WINDOW` seconds of ``min_per_second`` (and never less than one
    token), so a long quiet spell cannot save up a retry storm. This is the
    shape of Finagle's RetryBudget and of the AWS SDKs' retry quota.
    """

    ratio: float
    min_per_second: float
    clock: Callable[[], float] = time.monotonic
    capacity: float = attrs.field(init=False)
    balance: float = attrs.field(init=False)
    _refilled_at: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.capacity = max(BUDGET_WINDOW * self.min_per_second, 1.0)
        self.balance = min(self.min_per_second, self.capacity)
        self._refilled_at = self.clock()

    @classmethod
    def for_policy(cls, policy: RetryPolicy) -> RetryBudget:
        """Return a full-at-start budget with the policy's ratio and floor."""
        return cls(policy.budget_ratio, policy.budget_min_per_second)

    def deposit(self) -> None:
        """Credit one first attempt."""
        self.balance = min(self.capacity, self.balance + self.ratio)

    def try_withdraw(self) -> bool:
        """Take one token for a retry; ``False`` (and nothing taken) when there is none."""
        now = self.clock()
        elapsed, self._refilled_at = now - self._refilled_at, now
        self.balance = min(self.capacity, self.balance + elapsed * self.min_per_second)
        # The epsilon forgives float sums: five deposits of 0.2 make a token.
        if self.balance < 1.0 - 1e-9:
            return False
        self.balance = max(self.balance - 1.0, 0.0)
        return True


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Return the wait in seconds that the server asked for, if it asked.

    ``retry-after-ms`` (milliseconds) wins over ``Retry-After``, which is
    seconds or an HTTP-date. Unparsable values (``nan`` included) count as not
    asked; a date in the past asks for no wait.
    """
    if (millis := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return _seconds(float(millis) / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return _seconds(float(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _seconds(asked: float) -> float:
    """*asked* as a wait, a negative one as none.

    Raises:
        ValueError: *asked* is NaN, which ``float()`` reads: taken as asked, it
            would be a wait that no pause honours and no backoff replaces.
    """
    if math.isnan(asked):
        raise ValueError("not a number")
    return max(asked, 0.0)


def is_retryable(exc: BaseException) -> bool:
    """Tell whether a failed attempt may be tried again.

    Connection errors and timeouts are (a certificate failure is not); so are the statuses in
    `RETRY_STATUSES`, unless the answer says ``x-should-retry: false`` (and
    any status whose answer says ``x-should-retry: true``, but a proxy's 407).
    """
    if isinstance(exc, APIConnectionError):
        # A certificate that failed verification fails the same way the next time.
        return not isinstance(exc, APICertificateError)
    if not isinstance(exc, APIStatusError) or isinstance(exc, ProxyAuthenticationError):
        # A proxy's 407 is the proxy's answer, not the API's: its x-should-retry means nothing.
        return False
    should = exc.headers.get("x-should-retry")
    if should == "false":
        return False
    return should == "true" or exc.status_code in RETRY_STATUSES


class CallState(Protocol):
    """What the retry hooks read of the call being made."""

    @property
    def session_id(self) -> str | None:
        """The session the call is about, for the log."""

    @property
    def attempts(self) -> int:
        """Attempts made so far, the one that just failed included."""

    @property
    def rate_limited(self) -> int:
        """Attempts refused with 429: flow control, not failures."""


Sleep = Callable[[float], Awaitable[None]]
"""Sleeps a number of seconds: the client's own, which its closing cuts short."""


def build_retrying(
    policy: RetryPolicy, budget: RetryBudget, halted: Callable[[], bool], sleep: Sleep
) -> Callable[[Callable[[Any], Awaitable[_R]], CallState], Awaitable[_R]]:
    """Return the retry loop of one client, built once.

    The returned coroutine function runs ``attempt(call)`` until it succeeds,
    fails for good, or the policy or the budget says stop; then the last
    exception is raised as it is; nothing is retried once *halted* (the client
    closed) says so. Backoffs are slept with *sleep*. The hooks count attempts with
    ``call.attempts``, not tenacity's own counter, so that a caller may make
    the first attempt itself and enter the loop only when it failed.

    One object serves concurrent calls safely: each call gets its own
    ``RetryCallState``, and as every hook below is synchronous, tenacity's
    shared per-iteration state is never held across an ``await``.
    """

    def asked_wait(state: _t.RetryCallState) -> float | None:
        exc = _exception(state)
        if isinstance(exc, APIStatusError):
            return retry_after(exc.headers)
        return None

    def wait(state: _t.RetryCallState) -> float:
        # A server-asked wait is served by the client's pause gate, for every call at once;
        # a 429 by the window, which it shrank: the call then waits for a place in it.
        if asked_wait(state) is not None or isinstance(_exception(state), RateLimitError):
            return 0.0
        call: CallState = state.args[0]
        return policy.backoff(call.attempts - call.rate_limited)

    def stop(state: _t.RetryCallState) -> bool:
        call: CallState = state.args[0]
        exc = _exception(state)
        if halted():
            return True
        # A 429 shrinks the client's window; it does not use up an attempt.
        if call.attempts - call.rate_limited >= policy.max_attempts:
            return True
        if call.rate_limited > policy.max_rate_limited:
            return True
        asked = asked_wait(state)
        if asked is not None and asked > policy.max_retry_after:
            logger.info(
                "not retrying session %s: the server asked to wait %.1f s, over max_retry_after",
                _shown(call),
                asked,
            )
            return True
        # A 429 is flow control, not a failure: it costs the budget nothing.
        if not isinstance(exc, RateLimitError) and not budget.try_withdraw():
            logger.info("not retrying session %s: the retry budget is spent", _shown(call))
            return True
        return False

    def before_sleep(state: _t.RetryCallState) -> None:
        call: CallState = state.args[0]
        asked = asked_wait(state)
        if asked is not None:
            then = f"the client pauses {asked:.3f} s, as asked"
        elif isinstance(_exception(state), RateLimitError):
            then = "next when the client's smaller window has room"
        else:
            then = f"next in {state.upcoming_sleep:.3f} s"
        logger.info(
            "retrying session %s: attempt %d failed with %s; %s",
            _shown(call),
            call.attempts,
            _exception(state),
            then,
        )

    retrying: _t.AsyncRetrying = _t.AsyncRetrying(
        retry=_t.retry_if_exception(is_retryable),
        wait=wait,
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )
    return retrying


POLL_FIRST_DELAY: Final = 0.25
"""Seconds before the second poll of a wait for a terminal state."""
POLL_GROWTH: Final = 1.5
"""Each pause between polls is this many times the one before..."""
POLL_MAX_DELAY: Final = 2.0
"""...up to this many seconds."""


async def poll_until(
    fetch: Callable[[], Awaitable[_R]],
    done: Callable[[_R], bool],
    again: Callable[[BaseException], bool],
    sleep: Sleep,
) -> _R:
    """Call *fetch* until *done* holds for its result, at the polls' own pace, slept with *sleep*.

    The pace is the polls' own, whatever the retry policy: `POLL_FIRST_DELAY`
    seconds, growing by `POLL_GROWTH` up to `POLL_MAX_DELAY`. It polls forever:
    bound it with a timeout. An exception of *fetch* for which *again* holds is
    polled past; any other ends the polling. *fetch* must be a coroutine
    function, as tenacity tells them apart by their kind.
    """
    polling: _t.AsyncRetrying = _t.AsyncRetrying(
        retry=_t.retry_if_result(lambda result: not done(result)) | _t.retry_if_exception(again),
        wait=_t.wait_exponential(
            multiplier=POLL_FIRST_DELAY, exp_base=POLL_GROWTH, max=POLL_MAX_DELAY
        ),
        stop=_t.stop_never,
        reraise=True,
        sleep=sleep,
    )
    result: _R = await polling(fetch)
    return result


def _shown(call: CallState) -> str:
    """The call's session id for the log: the server's own may hold control characters."""
    return printable(f"{call.session_id}")


def _exception(state: _t.RetryCallState) -> BaseException | None:
    assert state.outcome is not None  # tenacity calls these hooks after an attempt
    return state.outcome.exception()
