"""Argument checks shared by the constructors of both cores: one rule, one message."""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import ConfigurationError


def non_empty_string(name: str, value: object, *, example: str = "") -> str:
    """``value`` if it is a string with more than white space in it.

    Raises:
        ConfigurationError: naming ``name`` (and ``example``, when given).
    """
    if not isinstance(value, str) or not value.strip():
        such = f" such as {example!r}" if example else ""
        raise ConfigurationError(f"{name} must be a non-empty string{such}, not {value!r}")
    return value


def non_empty_strings(name: str, values: object) -> tuple[str, ...]:
    """``values``, one string or an iterable of them, as a tuple of non-empty strings.

    A lone string is one value, never a sequence of one-letter values.

    Raises:
        ConfigurationError: no value, or one that is not a non-empty string.
    """
    chosen = (
        (values,)
        if isinstance(values, str)
        else tuple(values)
        if isinstance(values, Iterable)
        else ()
    )
    if not chosen or not all(isinstance(value, str) and value.strip() for value in chosen):
        raise ConfigurationError(f"{name} must be one or more non-empty strings, not {values!r}")
    return chosen
