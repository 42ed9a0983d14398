"""Type-checked, never run: the public API as a user writes it."""

from __future__ import annotations

import s2sauth


def errors_are_typed(exc: s2sauth.S2SAuthError) -> str:
    return exc.reason
