"""Django REST framework: an authentication class for ID tokens, and a permission for allow-lists.

::

    from s2sauth.django.rest_framework import IDTokenAuthentication, IsAllowedCaller

    class Orders(APIView):
        authentication_classes = [IDTokenAuthentication]
        permission_classes = [IsAllowedCaller]              # S2SAUTH["ALLOWED_CALLERS"]
        # permission_classes = [IsAllowedCaller.of("ops@my-project.iam.gserviceaccount.com")]

Configuration comes from ``settings.S2SAUTH`` (see :mod:`s2sauth.django`); the
verifier is the one the middleware and the decorator use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

try:
    from rest_framework import exceptions
    from rest_framework.authentication import BaseAuthentication
    from rest_framework.permissions import BasePermission
except ModuleNotFoundError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "s2sauth.django.rest_framework needs Django REST framework: pip install 's2sauth[drf]'"
    ) from exc

from django.core.exceptions import ImproperlyConfigured

from .._errors import (
    CallerNotAllowedError,
    ConfigurationError,
    InvalidTokenError,
    KeyFetchError,
    MissingTokenError,
    S2SAuthError,
)
from ..verify.caller import Caller
from ..verify.policy import CallerPolicy
from . import _authorization, _context, _current_gate, _verified

if TYPE_CHECKING:  # pragma: no cover
    from rest_framework.request import Request
    from rest_framework.views import APIView

    from ..verify.http import Denial, Gate

__all__ = [
    "CallerUser",
    "IDTokenAuthentication",
    "IsAllowedCaller",
    "KeysUnavailable",
]


# The DRF request attribute holding the challenge of the token refused on it.
_CHALLENGE = "_s2sauth_challenge"


class CallerUser:
    """``request.user`` for a verified caller: a principal that is not in the database.

    Attributes:
        caller: the verified :class:`~s2sauth.Caller`.
        pk: the caller's numeric unique ID (``sub``), stable for the account's life,
            so per-user throttles count per calling service.
        username: the caller's email, else its unique ID.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.pk = self.id = caller.subject
        self.username = caller.email or caller.subject

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"CallerUser({self.username!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallerUser) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(self.pk)

    def get_username(self) -> str:
        """The caller's email, else its unique ID."""
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        """Always ``False``: a service account holds no Django model permissions."""
        return False

    def has_perms(self, perm_list: Iterable[str], obj: object = None) -> bool:
        """Always ``False``, like :meth:`has_perm`."""
        return False

    def has_module_perms(self, app_label: str) -> bool:
        """Always ``False``, like :meth:`has_perm`."""
        return False


class KeysUnavailable(exceptions.APIException):
    """No verification keys could be had: 503 with ``Retry-After``, never a 500."""

    status_code = 503
    default_detail = "verification keys are unavailable, try again later"
    default_code = "temporarily_unavailable"

    def __init__(self, detail: Any = None, *, wait: int = 30) -> None:
        super().__init__(detail)
        #: Seconds to wait; DRF's exception handler sends it as ``Retry-After``.
        self.wait = wait


class _CallerNotAllowed(exceptions.PermissionDenied):
    def __init__(self, denial: Denial) -> None:
        super().__init__(dict(denial.payload))
        # DRF's handler sends auth_header as WWW-Authenticate: the insufficient_scope challenge.
        self.auth_header = dict(denial.headers)["WWW-Authenticate"]


def _challenge(denial: Denial) -> str:
    return dict(denial.headers)["WWW-Authenticate"]


def _bearer(authorization: tuple[str, ...]) -> bool:
    # The scheme as the gate reads it: up to the first space, case-insensitive.
    return bool(authorization) and authorization[0].strip().partition(" ")[0].lower() == "bearer"


def _raise(gate: Gate, exc: S2SAuthError) -> Exception:
    denial = gate.deny(exc)
    if isinstance(exc, KeyFetchError):
        return KeysUnavailable(dict(denial.payload), wait=max(1, int(exc.retry_after)))
    if isinstance(exc, CallerNotAllowedError):
        return _CallerNotAllowed(denial)
    return exceptions.AuthenticationFailed(dict(denial.payload))


class IDTokenAuthentication(BaseAuthentication):
    """DRF authentication by a Google-signed ID token (``Authorization: Bearer``).

    Use it as an ``authentication_classes`` entry (first, so its challenge is the
    one a 401 carries). A verified caller becomes ``request.user`` (a
    :class:`CallerUser`, not a database user) and ``request.auth`` (the
    :class:`~s2sauth.Caller`); ``request.caller`` is set too. The default allow-list,
    ``S2SAUTH["ALLOWED_CALLERS"]``, is applied here: a caller not on it gets 403.

    A request without a bearer token is not authenticated by this class (DRF then
    tries the next one); pair it with :class:`IsAllowedCaller` (or
    ``IsAuthenticated``) so that such a request is refused with 401. A bad token is
    a 401 with the same ``WWW-Authenticate`` challenge and JSON object as the
    middleware's; missing keys a 503 (:class:`KeysUnavailable`) with ``Retry-After``.
    Behind :class:`s2sauth.django.IDTokenMiddleware` the caller it verified is
    reused.

    Threat model: see :class:`s2sauth.django.IDTokenMiddleware`.

    .. versionadded:: 0.2
    """

    def authenticate(self, request: Request) -> tuple[CallerUser, Caller] | None:
        """The ``(user, auth)`` pair for a verified caller; ``None`` without a bearer token.

        Raises:
            AuthenticationFailed: a bad token (401).
            PermissionDenied: a caller not on the default allow-list (403).
            KeysUnavailable: no verification keys (503).
        """
        gate = _current_gate()
        django_request = request._request
        try:
            caller = _verified(django_request, gate)
            if caller is None:
                authorization, serverless = _authorization(django_request)
                context = _context(django_request, gate)
                if not serverless and not _bearer(authorization) and not context["assertion"]:
                    return None  # no token, or another scheme (Basic...): not ours to judge
                caller = gate.authenticate(
                    authorization, serverless, policy=gate.default, **context
                )
            else:
                caller = gate.authorize(caller, gate.default)
        except S2SAuthError as exc:
            if isinstance(exc, InvalidTokenError):
                # For authenticate_header, which DRF calls on another instance of this class.
                setattr(request, _CHALLENGE, _challenge(gate.deny(exc)))
            raise _raise(gate, exc) from None
        django_request.caller = caller
        return CallerUser(caller), caller

    def authenticate_header(self, request: Request) -> str:
        """The ``WWW-Authenticate`` challenge of a 401, which makes DRF answer 401, not 403."""
        challenge: str | None = getattr(request, _CHALLENGE, None)
        if challenge is not None:
            return challenge
        return _challenge(_current_gate().deny(MissingTokenError("no bearer token")))


class IsAllowedCaller(BasePermission):
    """DRF permission: the request has a caller verified by :class:`IDTokenAuthentication`.

    Use it as a ``permission_classes`` entry. As is, it requires a verified caller
    (on ``S2SAUTH["ALLOWED_CALLERS"]``, which the authentication already applied);
    ``IsAllowedCaller.of("ops@...")`` (or a subclass setting ``allowed_callers``)
    narrows it to a view's own allow-list. Without a verified caller the answer is
    401 with the bearer challenge; a caller not on the list gets 403.

    .. versionadded:: 0.2
    """

    #: This permission's allow-list; ``None`` lets in any caller the authentication verified.
    allowed_callers: ClassVar[Iterable[str] | CallerPolicy | None] = None

    @classmethod
    def of(cls, *allowed_callers: str) -> type[IsAllowedCaller]:
        """A subclass allowing only ``allowed_callers`` (emails, numeric IDs, wildcards).

        Raises:
            ImproperlyConfigured: an invalid allow-list.
        """
        try:
            policy = CallerPolicy(allowed_callers)
        except ConfigurationError as exc:
            raise ImproperlyConfigured(f"IsAllowedCaller.of: {exc.message}") from exc
        return type(cls.__name__, (cls,), {"allowed_callers": policy})

    def has_permission(self, request: Request, view: APIView) -> bool:
        """Whether the request's verified caller is allowed.

        Raises:
            NotAuthenticated: no caller verified by an ID token (401).
            PermissionDenied: a caller not on this permission's allow-list (403).
        """
        caller = request.auth
        gate = _current_gate()
        if not isinstance(caller, Caller):
            refusal = MissingTokenError("the request carries no verified ID token")
            gate.verifier.record_rejection(refusal)
            raise exceptions.NotAuthenticated(dict(gate.deny(refusal).payload))
        if self.allowed_callers is not None:
            try:
                gate.authorize(caller, _policy(type(self)))
            except CallerNotAllowedError as exc:
                raise _raise(gate, exc) from None
        return True


def _policy(cls: type[IsAllowedCaller]) -> CallerPolicy:
    allowed = cls.allowed_callers
    if isinstance(allowed, CallerPolicy):
        return allowed
    try:
        policy = CallerPolicy(allowed or ())
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{cls.__qualname__}.allowed_callers: {exc.message}") from exc
    cls.allowed_callers = policy  # built once per class
    return policy
