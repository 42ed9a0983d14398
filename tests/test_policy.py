"""Caller policy: allow-lists, per-route rules and exempt paths (s2sauth.verify.policy)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import pytest

from s2sauth._errors import (
    CallerNotAllowedError,
    ConfigurationError,
)
from s2sauth.verify.caller import Caller
from s2sauth.verify.policy import EXEMPT, CallerPolicy, RoutePolicy, Rule

SA = "caller@proj-one.iam.gserviceaccount.com"
SUB = "112233445566778899001"
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def caller(email: str | None = SA, subject: str = SUB) -> Caller:
    """A verified caller with ``email`` and ``subject``."""
    return Caller(email, subject, "https://svc", EPOCH, EPOCH, MappingProxyType({}))


@pytest.mark.parametrize(
    ("allowed", "who", "allowed_or_not"),
    [
        pytest.param([SA], caller(), True, id="email"),
        pytest.param([SA.upper()], caller(), True, id="entry upper case"),
        pytest.param([SA], caller(SA.upper()), True, id="caller email upper case"),
        pytest.param([f"  {SA} "], caller(), True, id="entry with spaces"),
        pytest.param(["other@proj-one.iam.gserviceaccount.com"], caller(), False, id="other"),
        pytest.param([SA], caller(email=None), False, id="unverified email"),
        pytest.param([SUB], caller(email=None), True, id="sub without email"),
        pytest.param([SUB], caller("someone@else.example"), True, id="sub with reused email"),
        pytest.param(["999"], caller(), False, id="other sub"),
        pytest.param(["*@proj-one.iam.gserviceaccount.com"], caller(), True, id="project"),
        pytest.param(["*@PROJ-ONE.iam.gserviceaccount.com"], caller(), True, id="project upper"),
        pytest.param(["*@proj-two.iam.gserviceaccount.com"], caller(), False, id="other project"),
        pytest.param(
            ["*@proj-one.iam.gserviceaccount.com"],
            caller("x@evilproj-one.iam.gserviceaccount.com"),
            False,
            id="project suffix",
        ),
        pytest.param(
            ["*@proj-one.iam.gserviceaccount.com"],
            caller("proj-one@appspot.gserviceaccount.com"),
            False,
            id="project appspot account",
        ),
        pytest.param(
            ["*@proj-one.iam.gserviceaccount.com"],
            caller("@proj-one.iam.gserviceaccount.com"),
            False,
            id="project empty name",
        ),
        pytest.param(
            ["*@proj-one.iam.gserviceaccount.com"], caller(None), False, id="project no email"
        ),
        pytest.param(
            ["*@example.com:proj-one.iam.gserviceaccount.com"],
            caller("sa@example.com:proj-one.iam.gserviceaccount.com"),
            True,
            id="domain-scoped project",
        ),
        pytest.param([SA, SUB, "*@proj-two.iam.gserviceaccount.com"], caller(), True, id="mixed"),
        # 'K' (U+212A, the Kelvin sign) lower-cases to an ASCII 'k'.
        pytest.param(
            ["ops-k@proj-one.iam.gserviceaccount.com"],
            caller("ops-\u212a@proj-one.iam.gserviceaccount.com"),
            False,
            id="non-ASCII look-alike email",
        ),
        pytest.param(
            ["*@kproject-1.iam.gserviceaccount.com"],
            caller("x@\u212aproject-1.iam.gserviceaccount.com"),
            False,
            id="non-ASCII look-alike project",
        ),
        pytest.param("other@x.example", caller(), False, id="single string entry"),
    ],
)
def test_allows(allowed: Any, who: Caller, allowed_or_not: bool) -> None:
    """Emails match case-insensitively, IDs exactly, the wildcard one project's accounts."""
    assert CallerPolicy(allowed).allows(who) is allowed_or_not


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("*", id="star"),
        pytest.param("*@*", id="star at star"),
        pytest.param("*@gmail.com", id="any gmail"),
        pytest.param("*@gserviceaccount.com", id="any service account"),
        pytest.param("*@iam.gserviceaccount.com", id="no project"),
        pytest.param("*@developer.gserviceaccount.com", id="every compute default"),
        pytest.param("*@proj.iam.gserviceaccount.com", id="project id too short"),
        pytest.param("a*b@x.example", id="inner star"),
        pytest.param("caller@*.iam.gserviceaccount.com", id="star project"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("caller", id="no domain"),
        pytest.param("caller@", id="at end"),
        pytest.param("@x.example", id="no name"),
        pytest.param("a@b@c.example", id="two ats"),
        pytest.param("caller@localhost", id="dotless domain"),
        pytest.param("12 34", id="spaced digits"),
        pytest.param("-123", id="negative number"),
        pytest.param("domain:example.com", id="IAM member syntax"),
        pytest.param("serviceAccount:a@b.example", id="IAM member prefix"),
    ],
)
def test_refused_entries(entry: str) -> None:
    """Anything but an email, a numeric ID or a one-project wildcard is a configuration error."""
    with pytest.raises(ConfigurationError):
        CallerPolicy([entry])


@pytest.mark.parametrize(
    "allowed",
    [
        pytest.param([], id="empty list"),
        pytest.param([123], id="number"),
        pytest.param([None], id="None"),
    ],
)
def test_refused_lists(allowed: Any) -> None:
    """An empty allow-list or a non-string entry is a configuration error."""
    with pytest.raises(ConfigurationError):
        CallerPolicy(allowed)


def test_check_names_the_caller() -> None:
    """A refused caller's email and unique ID are in the error and its attributes."""
    with pytest.raises(CallerNotAllowedError, match=SA) as caught:
        CallerPolicy(["other@x.example"]).check(caller())
    assert (caught.value.email, caught.value.subject) == (SA, SUB)
    assert caught.value.status_code == 403
    CallerPolicy([SA]).check(caller())


def test_compute_default_account_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Naming a Compute Engine default service account logs a WARNING (once)."""
    email = "918273645-compute@developer.gserviceaccount.com"
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        CallerPolicy([email])
        CallerPolicy([email])
    warnings = [r for r in caplog.records if "Compute Engine default" in r.getMessage()]
    assert len(warnings) == 1
    assert email in warnings[0].getMessage()


def test_entries_and_equality() -> None:
    """Policies normalise entries and compare by them."""
    policy = CallerPolicy([SA.upper(), SUB, "*@proj-two.iam.gserviceaccount.com"])
    assert policy.entries == {SA, SUB, "*@proj-two.iam.gserviceaccount.com"}
    assert policy == CallerPolicy([SUB, SA, "*@proj-two.iam.gserviceaccount.com"])
    assert SA in repr(policy)


ADMIN = CallerPolicy(["admin@proj-one.iam.gserviceaccount.com"])
REPORTS = CallerPolicy(["reports@proj-one.iam.gserviceaccount.com"])
WRITER = CallerPolicy(["writer@proj-one.iam.gserviceaccount.com"])
DEFAULT = CallerPolicy([SA])


@pytest.mark.parametrize(
    ("rule", "method", "path", "matches"),
    [
        pytest.param(Rule("/admin", ADMIN), "GET", "/admin", True, id="exact"),
        pytest.param(Rule("/admin", ADMIN), "GET", "/admin/", True, id="trailing slash"),
        pytest.param(Rule("/admin", ADMIN), "GET", "/admin/users", True, id="below"),
        pytest.param(Rule("/admin", ADMIN), "GET", "/administrator", False, id="not a segment"),
        pytest.param(Rule("/admin", ADMIN), "GET", "/", False, id="root"),
        pytest.param(Rule("/admin/", ADMIN), "GET", "/admin", True, id="rule trailing slash"),
        pytest.param(Rule("/", ADMIN), "GET", "/anything", True, id="root rule"),
        pytest.param(Rule("/admin", ADMIN, ["POST"]), "POST", "/admin", True, id="method"),
        pytest.param(Rule("/admin", ADMIN, ["post"]), "POST", "/admin", True, id="method case"),
        pytest.param(Rule("/admin", ADMIN, ["POST"]), "get", "/admin", False, id="other method"),
        pytest.param(Rule("/admin", ADMIN, ["GET"]), "HEAD", "/admin", True, id="HEAD with GET"),
        pytest.param(Rule("/admin", ADMIN, "DELETE"), "DELETE", "/admin", True, id="one method"),
    ],
)
def test_rule_matching(rule: Rule, method: str, path: str, matches: bool) -> None:
    """Rules match path prefixes on segment boundaries, and their methods."""
    assert rule.matches(method, path) is matches


@pytest.mark.parametrize(
    ("path", "allowed", "methods"),
    [
        pytest.param("admin", [SA], None, id="relative path"),
        pytest.param("", [SA], None, id="empty path"),
        pytest.param("/admin", [], None, id="empty allow-list"),
        pytest.param("/admin", ["*"], None, id="bad entry"),
        pytest.param("/admin", [SA], [], id="no methods"),
    ],
)
def test_rule_configuration_errors(path: str, allowed: Any, methods: Any) -> None:
    """A rule with a relative path, a bad allow-list or no methods is refused."""
    with pytest.raises(ConfigurationError):
        Rule(path, allowed, methods)


ROUTES = RoutePolicy(
    DEFAULT,
    rules=[
        Rule("/admin", ADMIN),
        Rule("/admin/reports", REPORTS),
        Rule("/data", WRITER, methods=["POST", "PUT"]),
        Rule("/admin/reports", ADMIN),
    ],
    exempt=["/healthz", "/public/"],
)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/", DEFAULT, id="default"),
        pytest.param("GET", "/admin", ADMIN, id="rule"),
        pytest.param("GET", "/admin/users", ADMIN, id="under rule"),
        pytest.param("GET", "/admin/reports/2024", REPORTS, id="longest prefix wins"),
        pytest.param("GET", "/administrator", DEFAULT, id="not a segment"),
        pytest.param("POST", "/data", WRITER, id="method rule"),
        pytest.param("GET", "/data", DEFAULT, id="method rule, other method"),
        pytest.param("GET", "//admin", ADMIN, id="doubled slash"),
        pytest.param("GET", "/healthz", EXEMPT, id="exempt exact"),
        pytest.param("POST", "/healthz", EXEMPT, id="exempt any method"),
        pytest.param("GET", "/healthz/", DEFAULT, id="exempt exact, trailing slash"),
        pytest.param("GET", "/healthz/x", DEFAULT, id="exempt exact, below"),
        pytest.param("GET", "/healthzz", DEFAULT, id="exempt exact, longer"),
        pytest.param("GET", "/public/", EXEMPT, id="exempt prefix"),
        pytest.param("GET", "/public/a/b.css", EXEMPT, id="exempt prefix, below"),
        pytest.param("GET", "/public", DEFAULT, id="exempt prefix, no slash"),
        pytest.param("GET", "/publicity", DEFAULT, id="exempt prefix, longer"),
        pytest.param("GET", "/public/../admin", DEFAULT, id="dot-dot never exempt"),
        pytest.param("GET", "/public/./x", DEFAULT, id="dot never exempt"),
    ],
)
def test_route_resolution(method: str, path: str, expected: Any) -> None:
    """Exempt paths first, then the longest matching rule (first on ties), then the default."""
    assert ROUTES.resolve(method, path) is expected


def test_no_default_means_any_valid_caller() -> None:
    """With default None, unmatched requests resolve to None (any verified caller)."""
    routes = RoutePolicy(None, rules=[Rule("/admin", ADMIN)])
    assert routes.resolve("GET", "/x") is None
    assert routes.resolve("GET", "/admin") is ADMIN


def test_default_may_be_a_list() -> None:
    """A plain list default becomes a CallerPolicy."""
    assert RoutePolicy([SA]).resolve("GET", "/") == DEFAULT


@pytest.mark.parametrize("exempt", [["healthz"], [""], [None]])
def test_exempt_configuration_errors(exempt: Any) -> None:
    """Exempt paths must be absolute."""
    with pytest.raises(ConfigurationError):
        RoutePolicy(None, exempt=exempt)


# -- helpers of the tests below ------------------------------------------------------------


OPS = "ops@proj-one.iam.gserviceaccount.com"


# -- policy --------------------------------------------------------------------------------


def test_caller_policy_equality_and_hash() -> None:
    """Policies with the same entries are equal and hash alike; a plain list is not a policy."""
    policy = CallerPolicy([SA])
    assert policy == CallerPolicy([f" {SA.upper()} "])
    assert hash(policy) == hash(CallerPolicy([SA.upper()]))
    assert len({policy, CallerPolicy([SA]), CallerPolicy([OPS])}) == 2
    assert policy != [SA]
    assert policy.__eq__([SA]) is NotImplemented


def test_rule_and_route_policy_reprs() -> None:
    """Rules and route policies show their normalised paths, allow-lists, methods and exempts."""
    rule = Rule("/admin//", [OPS], methods=["get"])
    assert repr(rule) == f"Rule('/admin', CallerPolicy(['{OPS}']), methods=['GET', 'HEAD'])"
    any_method = Rule("/data", [SA])
    assert repr(any_method) == f"Rule('/data', CallerPolicy(['{SA}']))"
    routes = RoutePolicy([SA], rules=[any_method, rule], exempt=["/public/", "/healthz"])
    assert repr(routes) == (
        f"RoutePolicy(CallerPolicy(['{SA}']), rules=[{rule!r}, {any_method!r}], "
        "exempt=['/healthz', '/public/'])"
    )
    assert repr(RoutePolicy(None)) == "RoutePolicy(None, rules=[], exempt=[])"
