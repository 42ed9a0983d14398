"""Caller policy: which verified callers may call, per service and per route.

A :class:`CallerPolicy` is an allow-list. Its entries are, case-insensitively:

* a service-account (or user) **email**, ``caller@project.iam.gserviceaccount.com``,
  which matches only a token whose ``email_verified`` is ``true``;
* a numeric **unique ID** (the token's ``sub``), ``"112233445566778899001"``,
  which survives the account being deleted and its email reused by another;
* ``"*@PROJECT.iam.gserviceaccount.com"``: every user-managed service account
  of one project. This is the only wildcard, an explicit opt-in; it never
  matches the Compute Engine or App Engine default accounts, whose emails live
  in other domains.

Anything else (``"*"``, ``"*@gmail.com"``, ``"a*b@x"``, an empty string, an empty
list) is a :class:`~s2sauth.ConfigurationError` at construction, so a typo can
never widen access. Naming a Compute Engine default service account
(``PROJECT_NUMBER-compute@developer.gserviceaccount.com``) works but logs a
WARNING: that account has the broad Editor role by default, so any workload
running as it can call.

A :class:`RoutePolicy` picks the allow-list per request: exempt paths first
(served without any token), then the most specific matching :class:`Rule`,
then the default.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal, TypeAlias

from .._errors import CallerNotAllowedError, ConfigurationError
from .caller import Caller

__all__ = ["EXEMPT", "CallerPolicy", "Exempt", "Resolution", "RoutePolicy", "Rule"]

logger = logging.getLogger("s2sauth")

# Lower-cased emails: RFC 5322 atext but '*' in the name; a dotted domain (':' for
# domain-scoped projects, "example.com:project.iam.gserviceaccount.com").
_EMAIL = re.compile(r"[a-z0-9!#$%&'+/=?^_`{|}~.-]+@[a-z0-9:-]+(?:\.[a-z0-9:-]+)*\.[a-z0-9-]+")
_SUBJECT = re.compile(r"[0-9]{1,64}")
# Project IDs: 6-30 lower-case letters, digits and hyphens, starting with a letter;
# domain-scoped projects read "example.com:project".
_PROJECT_WILDCARD = re.compile(
    r"\*@((?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com"
)
_SA_DOMAIN = ".iam.gserviceaccount.com"
_COMPUTE_DEFAULT = re.compile(r"\d+-compute@developer\.gserviceaccount\.com")
_MULTIPLE_SLASHES = re.compile(r"//+")
_warned_defaults: set[str] = set()


class Exempt(enum.Enum):
    """The type of :data:`EXEMPT`."""

    EXEMPT = "exempt"


#: What :meth:`RoutePolicy.resolve` returns for a path served without a token.
EXEMPT: Final = Exempt.EXEMPT

#: The outcome of :meth:`RoutePolicy.resolve`: an allow-list, ``None`` (any verified
#: caller) or :data:`EXEMPT` (no token needed).
Resolution: TypeAlias = "CallerPolicy | None | Literal[Exempt.EXEMPT]"


class CallerPolicy:
    """An allow-list of callers: emails, unique IDs and one-project wildcards.

    Use it as ``Verifier(allowed_callers=...)`` (a plain list is turned into one),
    per call, or per route in a :class:`Rule`.

    Args:
        allowed: the entries (see the module docstring); a single string is one entry.

    Raises:
        ConfigurationError: an entry is not an email, a numeric ID or
            ``*@PROJECT.iam.gserviceaccount.com``, or there is no entry at all.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        if isinstance(allowed, str):
            allowed = (allowed,)
        emails: set[str] = set()
        subjects: set[str] = set()
        projects: set[str] = set()
        for entry in allowed:
            if not isinstance(entry, str):
                raise ConfigurationError(
                    f"allowed callers are strings (emails or numeric IDs), not {entry!r}"
                )
            text = entry.strip().lower()
            if _SUBJECT.fullmatch(text):
                subjects.add(text)
            elif wildcard := _PROJECT_WILDCARD.fullmatch(text):
                projects.add(wildcard.group(1))
            elif _EMAIL.fullmatch(text):
                emails.add(text)
                _warn_compute_default(text)
            else:
                raise ConfigurationError(
                    f"allowed caller {entry!r} is not a service-account email, a numeric unique "
                    "ID, or '*@PROJECT.iam.gserviceaccount.com' (the only wildcard accepted)"
                )
        if not (emails or subjects or projects):
            raise ConfigurationError(
                "the allow-list is empty, which would refuse every caller; list the callers, "
                "or pass allowed_callers=None to accept any caller with a valid token"
            )
        self._emails = frozenset(emails)
        self._subjects = frozenset(subjects)
        self._projects = frozenset(projects)

    @property
    def entries(self) -> frozenset[str]:
        """Every entry, normalised (lower case; wildcards as written)."""
        wildcards = {f"*@{project}{_SA_DOMAIN}" for project in self._projects}
        return self._emails | self._subjects | wildcards

    def __repr__(self) -> str:
        return f"CallerPolicy({sorted(self.entries)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallerPolicy):
            return NotImplemented
        return self.entries == other.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def allows(self, caller: Caller) -> bool:
        """Whether ``caller`` is on the list (by unique ID, verified email or project)."""
        email = caller.email
        # Entries are lower-case ASCII: an email found as it is needs no folding (Google
        # sends them lower-case); this runs on every request, cached tokens' too.
        if email in self._emails or caller.subject in self._subjects:
            return True
        # Entries are ASCII; lower() would fold a non-ASCII look-alike (the Kelvin sign) into one.
        if email is None or not email.isascii():
            return False
        email = email.lower()
        if email in self._emails:
            return True
        if self._projects and email.endswith(_SA_DOMAIN):
            name, _, domain = email.partition("@")
            return bool(name) and domain[: -len(_SA_DOMAIN)] in self._projects
        return False

    def check(self, caller: Caller) -> None:
        """Raise unless ``caller`` is allowed.

        Raises:
            CallerNotAllowedError: naming the caller's email and unique ID.
        """
        if not self.allows(caller):
            who = caller.email or "with no verified email"
            raise CallerNotAllowedError(
                f"caller {who} (unique ID {caller.subject}) is not allowed to call this "
                "service; add its email or unique ID to allowed_callers",
                email=caller.email,
                subject=caller.subject,
            )


class Rule:
    """A per-route allow-list: requests under ``path`` (for ``methods``) use ``allowed_callers``.

    ``path`` is a prefix matched on segment boundaries: ``"/admin"`` covers
    ``/admin`` and ``/admin/users`` but not ``/administrator``. A rule for
    ``GET`` also covers ``HEAD``, which frameworks route to the same view.

    Args:
        path: an absolute path prefix, such as ``"/admin"``.
        allowed_callers: the allow-list for matching requests.
        methods: the HTTP methods it applies to; every method when ``None``.

    Raises:
        ConfigurationError: a path not starting with ``/``, an empty method list,
            or a bad allow-list.
    """

    def __init__(
        self,
        path: str,
        allowed_callers: Iterable[str] | CallerPolicy,
        methods: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"a rule's path must start with '/', not {path!r}")
        self.path = _normalise(path).rstrip("/") or "/"
        self.policy = (
            allowed_callers
            if isinstance(allowed_callers, CallerPolicy)
            else CallerPolicy(allowed_callers)
        )
        self.methods: frozenset[str] | None = None
        if methods is not None:
            chosen = {
                method.upper() for method in ([methods] if isinstance(methods, str) else methods)
            }
            if not chosen:
                raise ConfigurationError("a rule's methods must name at least one method")
            if "GET" in chosen:
                chosen.add("HEAD")
            self.methods = frozenset(chosen)

    def __repr__(self) -> str:
        methods = "" if self.methods is None else f", methods={sorted(self.methods)!r}"
        return f"Rule({self.path!r}, {self.policy!r}{methods})"

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request (``path`` with runs of ``/`` collapsed)."""
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return _under(path, self.path)


class RoutePolicy:
    """Which allow-list applies to a request: exempt paths, per-route rules, a default.

    Use the adapters' ``rules=``/``exempt=`` options; build one to test a policy.

    Paths are compared as the framework hands them over (already
    percent-decoded), with runs of ``/`` collapsed into one.

    * **Exempt** entries are served without a token, for every method. An entry
      matches its path exactly (``"/healthz"`` is not ``/healthz/x`` nor
      ``/healthz2``); an entry ending in ``/`` matches everything under it
      (``"/public/"``). A path with ``.`` or ``..`` segments is never exempt.
    * **Rules**: of the rules that match, the one with the longest path wins;
      between equally long ones, the first listed.
    * Otherwise the **default**: an allow-list, or ``None`` for any caller with a
      valid token.

    Args:
        default: the allow-list when no rule matches (a list is turned into one).
        rules: per-route allow-lists.
        exempt: paths served without a token (health checks).

    Raises:
        ConfigurationError: an exempt path not starting with ``/``.
    """

    def __init__(
        self,
        default: CallerPolicy | Iterable[str] | None,
        rules: Sequence[Rule] = (),
        exempt: Iterable[str] = (),
    ) -> None:
        if default is not None and not isinstance(default, CallerPolicy):
            default = CallerPolicy(default)
        self.default = default
        # Longest path first; sorted() is stable, so equal lengths keep their order.
        self.rules = tuple(sorted(rules, key=lambda rule: len(rule.path), reverse=True))
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in [exempt] if isinstance(exempt, str) else exempt:
            if not isinstance(entry, str) or not entry.startswith("/"):
                raise ConfigurationError(f"an exempt path must start with '/', not {entry!r}")
            entry = _normalise(entry)
            if entry.endswith("/"):
                prefixes.append(entry)
            else:
                exact.add(entry)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __repr__(self) -> str:
        exempt = sorted(self._exact | set(self._prefixes))
        return f"RoutePolicy({self.default!r}, rules={list(self.rules)!r}, exempt={exempt!r})"

    def resolve(self, method: str, path: str) -> Resolution:
        """The allow-list for a request: a :class:`CallerPolicy`, ``None`` or :data:`EXEMPT`."""
        if "//" in path:
            path = _normalise(path)
        if path in self._exact or (
            self._prefixes and path.startswith(self._prefixes) and not _has_dot_segment(path)
        ):
            return EXEMPT
        for rule in self.rules:
            if rule.matches(method, path):
                return rule.policy
        return self.default


def _normalise(path: str) -> str:
    return _MULTIPLE_SLASHES.sub("/", path)


def _under(path: str, prefix: str) -> bool:
    if prefix == "/":
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def _warn_compute_default(email: str) -> None:
    if _COMPUTE_DEFAULT.fullmatch(email) and email not in _warned_defaults:
        _warned_defaults.add(email)
        logger.warning(
            "the allow-list names %s, a Compute Engine default service account: it has the "
            "broad Editor role by default, so any workload running as it can call; prefer a "
            "dedicated service account per caller",
            email,
        )


# Entries of a PeoplePolicy: emails, and Google Workspace domains.
_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_USER = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+")


class PeoplePolicy(CallerPolicy):
    """An allow-list of people: emails, and Google Workspace domains (the ``hd`` claim).

    Use it through :class:`~s2sauth.iap.IAPVerifier` (``allowed_users``/``allowed_domains``).
    A domain matches only the ``hd`` claim IAP signs, never the text after ``@``
    in an email (a consumer account can have any email at any domain).

    Args:
        users: emails, compared case-insensitively.
        domains: Workspace domains, such as ``"example.com"``.

    Raises:
        ConfigurationError: an entry that is not an email or a domain, or no entry at all.
    """

    def __init__(self, users: Iterable[str] = (), domains: Iterable[str] = ()) -> None:
        self._users = _entries("allowed_users", users, _USER)
        self._domains = _entries("allowed_domains", domains, _DOMAIN)
        if not (self._users or self._domains):
            raise ConfigurationError(
                "the allow-list of people is empty, which would refuse everyone; name "
                "allowed_users or allowed_domains, or pass neither to accept anyone IAP admits"
            )
        # CallerPolicy's own sets, so its other methods see an empty service allow-list.
        self._emails = self._users
        self._subjects = frozenset()
        self._projects = frozenset()

    @property
    def entries(self) -> frozenset[str]:
        """Every entry, lower-cased: emails, and domains as ``hd:DOMAIN``."""
        return self._users | {f"hd:{domain}" for domain in self._domains}

    def __repr__(self) -> str:
        return f"PeoplePolicy({sorted(self.entries)!r})"

    def allows(self, caller: Caller) -> bool:
        """Whether ``caller``'s email or signed Workspace domain is on the list."""
        email = caller.email
        if email is not None and email.isascii() and email.lower() in self._users:
            return True
        hd = caller.claims.get("hd")
        return type(hd) is str and hd.isascii() and hd.lower() in self._domains

    def check(self, caller: Caller) -> None:
        """Raise unless ``caller`` is allowed.

        Raises:
            CallerNotAllowedError: naming the person's email.
        """
        if not self.allows(caller):
            raise CallerNotAllowedError(
                f"{caller.email or 'this person'} is not allowed to use this service; add "
                "the email to allowed_users or the Workspace domain to allowed_domains",
                email=caller.email,
                subject=caller.subject,
            )


def _entries(name: str, values: Iterable[str], pattern: re.Pattern[str]) -> frozenset[str]:
    if isinstance(values, str):
        values = (values,)
    chosen: set[str] = set()
    for value in values:
        text = value.strip().lower() if isinstance(value, str) else None
        if text is None or not pattern.fullmatch(text):
            raise ConfigurationError(f"{name} entry {value!r} is not acceptable")
        chosen.add(text)
    return frozenset(chosen)
