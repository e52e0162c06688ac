from __future__ import annotations

from urllib.parse import urljoin

import pytest
from hypothesis import given
from hypothesis import strategies as st

from browserbase_async._config import (
    check_session_id,
    is_loopback,
    resolve_api_key,
    resolve_base_url,
    resolve_proxy,
)


def test_key_from_argument_wins() -> None:
    assert resolve_api_key("k1", {"BROWSERBASE_API_KEY": "k2"}) == "k1"


def test_key_from_environment() -> None:
    assert resolve_api_key(None, {"BROWSERBASE_API_KEY": "k2"}) == "k2"


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ValueError, match="BROWSERBASE_API_KEY"):
        resolve_api_key(None, {})


def test_blank_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_api_key("  ", {})


def test_base_url_default_and_environment() -> None:
    assert resolve_base_url(None, environ={}) == "https://api.browserbase.com"
    env = {"BROWSERBASE_BASE_URL": "https://eu.example/"}
    assert resolve_base_url(None, environ=env) == "https://eu.example"


@pytest.mark.parametrize(
    "url", ["http://localhost:4010", "http://127.0.0.2:80", "http://[::1]:9/", "https://x.example"]
)
def test_safe_base_urls(url: str) -> None:
    assert resolve_base_url(url, environ={}) == url.rstrip("/")


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ValueError, match="allow_insecure_http"):
        resolve_base_url("http://api.example.com", environ={})
    url = resolve_base_url("http://api.example.com", allow_insecure_http=True, environ={})
    assert url == "http://api.example.com"


@pytest.mark.parametrize(
    "url", ["ftp://x.example", "api.browserbase.com", "https://", "https://x/?a=1"]
)
def test_malformed_base_urls(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        resolve_base_url(url, environ={})


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@127.0.0.1:99999",
        "http://127.0.0.1:-1",
        "http://127.0.0.1:abc",
        "http://[::1",
        "http://user:pw@other.example\\@127.0.0.1",
    ],
)
def test_a_base_url_that_no_request_can_use_is_refused_when_the_client_is_made(url: str) -> None:
    # A port out of range, a backslash in the authority: accepted here, then every call
    # failed with a connection error (retried, and checked, for each session of a bulk run).
    with pytest.raises(ValueError, match="base_url") as caught:
        resolve_base_url(url, environ={})
    assert "pw" not in str(caught.value)
    proxied = url.replace("127.0.0.1", "proxy.example")
    with pytest.raises(ValueError, match="proxy") as caught:
        resolve_proxy(proxied, "https://api.browserbase.com")
    assert "pw" not in str(caught.value)


def test_loopback_names() -> None:
    assert is_loopback("LOCALHOST")
    assert is_loopback("127.9.9.9")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("example.com")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a?b", "a#b", "a b", "é", "a%2F", "a\n", 5])
def test_bad_session_ids(bad: object) -> None:
    with pytest.raises(ValueError, match="session id"):
        check_session_id(bad)


@given(st.text(min_size=1, max_size=40))
def test_no_accepted_id_can_change_the_path(session_id: str) -> None:
    try:
        check_session_id(session_id)
    except ValueError:
        return
    base = "https://api.browserbase.com/v1/sessions/"
    assert urljoin(base, session_id) == base + session_id
    assert set(session_id) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    assert session_id not in (".", "..")


@given(st.from_regex(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,40}", fullmatch=True))
def test_unreserved_ids_are_accepted(session_id: str) -> None:
    assert check_session_id(session_id) == session_id
