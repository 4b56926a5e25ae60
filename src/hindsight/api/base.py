"""What every request shares: building from a JSON object with type checks, and writing itself back out."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self

from hindsight.api.errors import InvalidRequest


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    return {str: "text", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(fits, value as the field's type): ints are accepted for floats; booleans are never numbers."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, v = (value is None, None) if arg is type(None) else _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        items = [_coerce(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool), float(value) if isinstance(
            value, int | float) else value
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported field type {hint!r}")


class Request:
    """A typed, validated request for one method; subclasses are dataclasses with a ``method`` name."""

    method: ClassVar[str]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build and validate from a JSON object; an unknown key or a wrong type is an error naming that key."""
        if not isinstance(d, dict):
            raise InvalidRequest("request", "A request must be a JSON object.")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key == "method":
                if value != cls.method:
                    raise InvalidRequest("method", f"This is a {cls.method} request, not {value!r}.")
                continue
            if key not in fields:
                raise InvalidRequest(key, f"Unknown field {key!r} in a {cls.method} request; known fields: "
                                          f"{', '.join(fields)}.")
            ok, kwargs[key] = _coerce(value, hints[key])
            if not ok:
                raise InvalidRequest(key, "{param} " + f"must be {_type_name(hints[key])} (got {value!r}).")
        missing = [name for name, f in fields.items() if name not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise InvalidRequest(missing[0], f"A {cls.method} request needs the field {missing[0]!r}.")
        return cls(**kwargs).validate()

    def to_dict(self) -> dict[str, Any]:
        """The request as a JSON object that ``from_dict`` reads back (with its ``method``)."""
        return {"method": self.method, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def validate(self) -> Self:
        """Raise :class:`InvalidRequest` for the first field that cannot work; returns ``self`` when all can."""
        return self
