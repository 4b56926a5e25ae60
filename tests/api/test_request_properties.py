"""Property: any JSON-ish value in any field of any request either validates or raises the one error type.

Request validation is where every face (CLI, server, Ray worker) rejects bad input, so nothing a user can type
may escape it as a TypeError, OverflowError, UnicodeError or a torch error.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

api = pytest.importorskip("hindsight.api")
from hindsight.api.requests import REQUESTS  # noqa: E402
from hindsight.errors import HindsightError  # noqa: E402

# text that includes lone surrogates (what invalid UTF-8 on a command line becomes) and control characters
TEXT = st.text(st.characters(codec=None, categories=None), max_size=30) | st.sampled_from(
    ["", " ", "\ud800", "toxicity^1e999", "harmless:../x", "a" * 200, "trlm-fo", "self", "cpu", "banana"])
INTS = st.integers(-(2**70), 2**70) | st.sampled_from([0, -1, 1, 2, 10**9])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-320, 1e308])
ANY = st.none() | st.booleans() | INTS | FLOATS | TEXT | st.lists(TEXT, max_size=3)


def for_hint(hint) -> st.SearchStrategy:
    """Values of the field's own type most of the time, anything JSON can hold some of the time."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        typed = st.one_of([for_hint(a) if a is not type(None) else st.none() for a in typing.get_args(hint)])
    elif origin is list:
        typed = st.lists(for_hint(typing.get_args(hint)[0]), max_size=4)
    else:
        typed = {int: INTS, float: FLOATS | INTS, str: TEXT, bool: st.booleans()}.get(hint, ANY)
    return st.one_of(typed, typed, typed, ANY)


def request_dicts(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: for_hint(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries({}, optional=fields)


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_validation_raises_only_the_one_error_type(method):
    cls = REQUESTS[method]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request_dicts(cls))
    def check(d):
        try:
            cls.from_dict(d)
        except HindsightError as e:
            msg = str(e)
            assert msg.strip() and "\n" not in msg.strip() and "Traceback" not in msg, msg

    check()
