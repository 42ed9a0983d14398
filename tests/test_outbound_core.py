"""Unit tests of the outbound adapters' shared rules (s2sauth._outbound)."""

from __future__ import annotations

from typing import Any

import pytest

from s2sauth._errors import ConfigurationError
from s2sauth._outbound import (
    AccessTokenRules,
    IDTokenRules,
    Redirect,
    origin,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://svc-xyz.a.run.app/path?q=1", "https://svc-xyz.a.run.app", id="path"),
        pytest.param("https://svc.example:443/", "https://svc.example", id="default https port"),
        pytest.param("http://svc.example:80", "http://svc.example", id="default http port"),
        pytest.param("http://127.0.0.1:8080/x", "http://127.0.0.1:8080", id="other port"),
        pytest.param("HTTPS://SVC.Example/", "https://svc.example", id="case folded"),
        pytest.param("http://[::1]:9000/", "http://[::1]:9000", id="ipv6"),
        pytest.param("https://user:pw@svc.example/", "https://svc.example", id="userinfo dropped"),
        pytest.param("ftp://svc.example/", None, id="not http"),
        pytest.param("/relative", None, id="relative"),
        pytest.param("http://svc.example:99999/", None, id="bad port"),
    ],
)
def test_origin(url: str, expected: str | None) -> None:
    """origin() is scheme://host[:port] with the default port left out."""
    assert origin(url) == expected


def test_derived_audience_is_the_origin() -> None:
    """With no audience, each URL's origin is its audience."""
    rules = IDTokenRules()
    assert rules.key_for("https://svc-xyz.a.run.app/orders/7?x=1") == "https://svc-xyz.a.run.app"
    assert rules.key_for("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_explicit_and_callable_audience() -> None:
    """A string audience is used as is; a callable gets the whole URL."""
    rules = IDTokenRules("aud-1", targets=["https://a.example"])
    assert rules.key_for("https://a.example/x") == "aud-1"
    assert rules.key_for("https://b.example/x") is None
    seen: list[str] = []

    def audience(url: str) -> str:
        seen.append(url)
        return "aud-" + url.rsplit("/", 1)[-1]

    assert IDTokenRules(audience).key_for("https://a.example/v2") == "aud-v2"
    assert seen == ["https://a.example/v2"]


@pytest.mark.parametrize("returned", ["", "  ", None, 42])
def test_callable_audience_must_return_a_string(returned: Any) -> None:
    """A callable that returns no usable audience is a configuration error."""
    rules = IDTokenRules(lambda url: returned)
    with pytest.raises(ConfigurationError, match="audience callable"):
        rules.key_for("https://a.example/")


def test_derived_audience_needs_an_http_url() -> None:
    """An audience cannot be derived from a URL without an http(s) origin."""
    with pytest.raises(ConfigurationError, match="pass audience="):
        IDTokenRules().key_for("http+unix://%2Ftmp%2Fsock/x")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"audience": ""}, id="empty audience"),
        pytest.param({"audience": 3}, id="audience not a string"),
        pytest.param({"header": "cookie"}, id="unknown header mode"),
        pytest.param({"header": None}, id="header mode None"),
        pytest.param({"targets": "https://a.example"}, id="targets a lone string"),
        pytest.param({"targets": []}, id="targets empty"),
        pytest.param({"targets": ["a.example"]}, id="target without scheme"),
        pytest.param({"targets": ["ftp://a.example"]}, id="target not http"),
        pytest.param({"targets": ["https://a.example/?q=1"]}, id="target with query"),
        pytest.param({"targets": ["https://a.example/#f"]}, id="target with fragment"),
        pytest.param({"targets": ["https://u@a.example/"]}, id="target with user"),
        pytest.param({"targets": [None]}, id="target not a string"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    """Bad arguments fail at construction with ConfigurationError."""
    with pytest.raises(ConfigurationError):
        IDTokenRules(**kwargs)


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("authorization", ("Authorization",)),
        ("x-serverless-authorization", ("X-Serverless-Authorization",)),
        ("both", ("Authorization", "X-Serverless-Authorization")),
        ("Both", ("Authorization", "X-Serverless-Authorization")),
    ],
)
def test_header_modes_attach_the_same_token(mode: str, names: tuple[str, ...]) -> None:
    """Each header of the mode carries the same bearer token, and it reads back."""
    rules = IDTokenRules(header=mode)
    headers: dict[str, str] = {}
    rules.attach(headers, "tok")
    assert headers == dict.fromkeys(names, "Bearer tok")
    assert rules.sent_token(headers) == "tok"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer "}, None),
        ({"Authorization": "bearer tok"}, "tok"),
    ],
)
def test_sent_token(headers: dict[str, str], expected: str | None) -> None:
    """Only a bearer token in the mode's header counts as sent."""
    assert IDTokenRules().sent_token(headers) == expected


def test_strip_removes_both_headers_whatever_the_mode() -> None:
    """Neither token header survives strip(), even the one the mode does not use."""
    headers = {"Authorization": "Bearer a", "X-Serverless-Authorization": "Bearer b", "K": "v"}
    IDTokenRules(header="authorization").strip(headers)
    assert headers == {"K": "v"}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://svc.run.app/", True, id="origin target"),
        pytest.param("https://svc.run.app:443/any/path", True, id="origin target, default port"),
        pytest.param("http://svc.run.app/", False, id="other scheme"),
        pytest.param("https://svc.run.app.evil.example/", False, id="suffix host"),
        pytest.param("https://api.example/v1/items", True, id="under prefix"),
        pytest.param("https://api.example/v1/", True, id="the prefix itself"),
        pytest.param("https://api.example/v1", False, id="prefix without its slash"),
        pytest.param("https://api.example/v2/items", False, id="outside prefix"),
        pytest.param("https://api.example/v1/../admin", False, id="dot-dot segment"),
        pytest.param("https://api.example/v1/%2e%2e/admin", False, id="encoded dot-dot"),
        pytest.param("https://api.example/v1/..;/admin", False, id="dot-dot with a parameter"),
        pytest.param("https://api.example/v1/..%3b/admin", False, id="encoded parameter"),
        pytest.param("https://api.example/v1/..%5cadmin", False, id="backslash separator"),
        pytest.param("https://api.example/v1/\uff0e\uff0e/admin", False, id="full-width dots"),
        pytest.param("https://api.example/v1/..x/items", True, id="dots inside a name"),
        pytest.param("https://other.example/v1/items", False, id="other host"),
        pytest.param("https://beta.example/v1", True, id="slashless prefix, exact"),
        pytest.param("https://beta.example/v1/x", True, id="slashless prefix, below"),
        pytest.param("https://beta.example/v10", False, id="slashless prefix, sibling"),
    ],
)
def test_targets(url: str, allowed: bool) -> None:
    """targets admit origins exactly and URL prefixes by whole path segments."""
    rules = IDTokenRules(
        targets=["https://svc.run.app", "https://api.example/v1/", "https://beta.example/v1"]
    )
    assert rules.allows(url) is allowed
    assert (rules.key_for(url) is not None) is allowed


def test_no_targets_allows_everything() -> None:
    """Without targets every request the auth is applied to gets a token."""
    assert IDTokenRules().key_for("https://anything.example/") == "https://anything.example"


@pytest.mark.parametrize(
    ("targets", "old", "new", "action"),
    [
        pytest.param(None, "https://a.example/x", "https://a.example/y", Redirect.KEEP, id="same"),
        pytest.param(None, "https://a.example/", "https://b.example/", Redirect.STRIP, id="other"),
        pytest.param(None, "http://a.example/", "https://a.example/", Redirect.STRIP, id="upgrade"),
        pytest.param(
            None, "https://a.example/", "https://a.example:8443/", Redirect.STRIP, id="other port"
        ),
        pytest.param(
            ["https://a.example", "https://b.example"],
            "https://a.example/",
            "https://b.example/",
            Redirect.REISSUE,
            id="to another target",
        ),
        pytest.param(
            ["https://a.example"],
            "https://a.example/",
            "https://b.example/",
            Redirect.STRIP,
            id="to a non-target",
        ),
        pytest.param(
            ["https://a.example/v1/"],
            "https://a.example/v1/x",
            "https://a.example/admin",
            Redirect.STRIP,
            id="same origin, out of the prefix",
        ),
    ],
)
def test_redirect(targets: list[str] | None, old: str, new: str, action: Redirect) -> None:
    """Same origin keeps the token, another origin drops it unless it is a target."""
    assert IDTokenRules(targets=targets).redirect(old, new) is action


def test_follow_applies_the_redirect_rule_to_headers() -> None:
    """follow() strips for STRIP and REISSUE, and names the key only for REISSUE."""
    rules = IDTokenRules(header="both", targets=["https://a.example", "https://b.example"])
    headers = {"Authorization": "Bearer t", "X-Serverless-Authorization": "Bearer t"}
    assert rules.follow("https://a.example/", "https://a.example/next", headers) is None
    assert rules.sent_token(headers) == "t"
    key = rules.follow("https://a.example/", "https://b.example/", headers)
    assert key == "https://b.example"
    assert headers == {}


def test_rejected_names_what_to_invalidate() -> None:
    """A 401 to a token we sent names (audience, token); anything else names nothing."""
    rules = IDTokenRules(targets=["https://a.example"])
    sent = {"Authorization": "Bearer t"}
    assert rules.rejected(401, "https://a.example/x", sent) == ("https://a.example", "t")
    assert rules.rejected(403, "https://a.example/x", sent) is None
    assert rules.rejected(401, "https://a.example/x", {}) is None
    assert rules.rejected(401, "https://b.example/x", sent) is None


def test_access_token_rules() -> None:
    """Access tokens go in Authorization, keyed by the scope set, to every URL."""
    rules = AccessTokenRules("https://www.googleapis.com/auth/cloud-platform")
    assert rules.header_names == ("Authorization",)
    key = rules.key_for("https://storage.googleapis.com/b")
    assert key == ("https://www.googleapis.com/auth/cloud-platform",)
    with pytest.raises(ConfigurationError):
        AccessTokenRules([])
    with pytest.raises(ConfigurationError):
        AccessTokenRules(["ok", ""])
