"""Plain Django views: bare ones for the middleware, and ones guarded by the decorator."""

from __future__ import annotations

import asyncio
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View

from s2sauth.django import require_id_token

from . import OPS


def _email(request: HttpRequest, **extra: Any) -> JsonResponse:
    return JsonResponse({"email": request.caller.email, **extra})  # type: ignore[attr-defined]


def hello(request: HttpRequest) -> JsonResponse:
    """The caller's email."""
    return _email(request)


async def async_hello(request: HttpRequest) -> JsonResponse:
    """The caller's email, from an async view."""
    await asyncio.sleep(0)
    return _email(request, kind="async")


def healthz(request: HttpRequest) -> JsonResponse:
    """No caller needed."""
    return JsonResponse({"ok": True})


def where(request: HttpRequest) -> JsonResponse:
    """The paths Django saw, and the caller."""
    return _email(request, path=request.path, path_info=request.path_info)


@require_id_token()
def decorated_hello(request: HttpRequest) -> JsonResponse:
    """Default allow-list, sync function view."""
    return _email(request)


@require_id_token(allowed_callers=[OPS])
def decorated_admin(request: HttpRequest) -> JsonResponse:
    """Ops only."""
    return _email(request)


@require_id_token
async def decorated_async(request: HttpRequest) -> JsonResponse:
    """Async function view, decorator without parentheses."""
    await asyncio.sleep(0)
    return _email(request, kind="async")


@require_id_token
def decorated_bare(request: HttpRequest) -> JsonResponse:
    """Sync function view, decorator without parentheses."""
    return _email(request, kind="bare")


@require_id_token(allowed_callers=[OPS])
class DecoratedClass(View):
    """A class-based view decorated as a whole."""

    def get(self, request: HttpRequest) -> JsonResponse:
        return _email(request, kind="class")


@require_id_token()
class DecoratedAsyncClass(View):
    """An async class-based view decorated as a whole."""

    async def get(self, request: HttpRequest) -> JsonResponse:
        await asyncio.sleep(0)
        return _email(request, kind="async class")


@method_decorator(require_id_token(allowed_callers=[OPS]), name="dispatch")
class MethodDecorated(View):
    """A class-based view guarded through method_decorator."""

    def get(self, request: HttpRequest) -> JsonResponse:
        return _email(request, kind="method")


@method_decorator(require_id_token(), name="dispatch")
class AsyncMethodDecorated(View):
    """An async class-based view guarded through method_decorator."""

    async def get(self, request: HttpRequest) -> JsonResponse:
        return _email(request, kind="async method")
