"""Routes of the test project: the same views bare (for the middleware), decorated, and in DRF."""

from __future__ import annotations

from django.urls import path

from . import drf_views, views

urlpatterns = [
    # Behind the middleware: /admin is narrowed by a rule, /healthz exempt.
    path("hello", views.hello),
    path("admin", views.hello),
    path("healthz", views.healthz),
    path("async", views.async_hello),
    path("where", views.where),
    # Guarded by @require_id_token, no middleware.
    path("decorated/hello", views.decorated_hello),
    path("decorated/admin", views.decorated_admin),
    path("decorated/healthz", views.healthz),
    path("decorated/async", views.decorated_async),
    path("decorated/bare", views.decorated_bare),
    path("decorated/class", views.DecoratedClass.as_view()),
    path("decorated/async-class", views.DecoratedAsyncClass.as_view()),
    path("decorated/method", views.MethodDecorated.as_view()),
    path("decorated/async-method", views.AsyncMethodDecorated.as_view()),
    # Django REST framework.
    path("drf/hello", drf_views.Hello.as_view()),
    path("drf/admin", drf_views.Admin.as_view()),
    path("drf/healthz", drf_views.Health.as_view()),
    path("drf/open", drf_views.Open.as_view()),
]
