"""Django REST framework views authenticated by ID token."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from s2sauth.django.rest_framework import CallerUser, IDTokenAuthentication, IsAllowedCaller

from . import OPS


class Hello(APIView):
    """Any caller the authentication lets in (the default allow-list)."""

    authentication_classes = [IDTokenAuthentication]
    permission_classes = [IsAllowedCaller]

    def get(self, request: Request) -> Response:
        user = request.user
        assert isinstance(user, CallerUser) and user.is_authenticated
        body: dict[str, Any] = {"email": request.auth.email, "user": str(user), "pk": user.pk}
        body["caller"] = request.caller.email  # type: ignore[attr-defined]
        return Response(body)


class Admin(Hello):
    """Ops only, by the permission's own allow-list."""

    permission_classes = [IsAllowedCaller.of(OPS)]


class Health(APIView):
    """Open to anyone, no token looked at."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class Open(APIView):
    """Authenticates when it can, but lets anonymous requests in (DRF's AllowAny)."""

    authentication_classes = [IDTokenAuthentication]
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        email = request.auth.email if request.auth is not None else None
        return Response({"email": email, "authenticated": bool(request.user)})
