"""attrs validators shared by the settings classes of the HTTP layers
(:class:`~trioquic.h3.Http3Settings`, :class:`~trioquic.TcpSettings`); each
error names the class and the field, e.g. ``TcpSettings.max_connections``."""

from __future__ import annotations

from typing import Any

import attrs


def _field(instance: object, attribute: attrs.Attribute[Any]) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def int_at_least(minimum: int, *, optional: bool = False) -> Any:
    """An int (not a bool) of at least ``minimum``; ``None`` too if
    ``optional``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"{_field(instance, attribute)} must be an int"
                + (" or None" if optional else "")
                + f", got {type(value).__name__}"
            )
        if value < minimum:
            raise ValueError(
                f"{_field(instance, attribute)} must be at least {minimum}, got {value}"
            )

    return check


def seconds(*, optional: bool = False) -> Any:
    """A number of seconds greater than 0; ``None`` too if ``optional``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"{_field(instance, attribute)} must be a number of seconds"
                + (" or None" if optional else "")
                + f", got {type(value).__name__}"
            )
        if not value > 0:
            raise ValueError(
                f"{_field(instance, attribute)} must be greater than 0, got {value!r}"
            )

    return check


def flag(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A bool."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{_field(instance, attribute)} must be a bool, got {type(value).__name__}"
        )
