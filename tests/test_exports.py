from __future__ import annotations

import browserbase_async


def test_all_is_sorted() -> None:
    assert browserbase_async.__all__ == sorted(browserbase_async.__all__)


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(browserbase_async).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("browserbase_async")
    }
    assert public <= set(browserbase_async.__all__)
    for name in browserbase_async.__all__:
        assert hasattr(browserbase_async, name)


def test_exception_tree() -> None:
    from browserbase_async import (
        APIConnectionError,
        APIError,
        APIResponseValidationError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BrowserbaseError,
        ConflictError,
        InternalServerError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        UnprocessableEntityError,
    )

    assert issubclass(APIError, BrowserbaseError)
    assert issubclass(APITimeoutError, APIConnectionError)
    for kind in (APIConnectionError, APIResponseValidationError, APIStatusError):
        assert issubclass(kind, APIError)
    for kind in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        UnprocessableEntityError,
        RateLimitError,
        InternalServerError,
    ):
        assert issubclass(kind, APIStatusError)
    assert not issubclass(ValueError, BrowserbaseError)
