"""Property: any JSON-ish value in any field of any request either validates or raises the one error type.

Request validation is where every face (CLI, server, Ray worker) rejects bad input, so nothing a user can type
may escape it as a TypeError, OverflowError, UnicodeError or a torch error.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

api = pytest.importorskip("hindsight.api")
from hindsight.api.base import Request  # noqa: E402
from hindsight.api.errors import InvalidRequest  # noqa: E402
from hindsight.api.requests import REQUESTS  # noqa: E402

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


def _subclasses(cls) -> set[type]:
    return {c for sub in cls.__subclasses__() for c in {sub, *_subclasses(sub)}}


def test_every_request_class_is_registered_and_so_covered_below():
    assert {c for c in _subclasses(Request) if "method" in c.__dict__} == set(REQUESTS.values())


def _one_sentence(e: InvalidRequest, known: set[str]) -> None:
    msg = str(e)
    assert msg.strip() and "\n" not in msg.strip() and "Traceback" not in msg, msg
    assert e.param in known, (e.param, msg)  # the error names a field a face can point at


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_validation_raises_only_the_one_error_type(method):
    """``from_dict`` (types) then ``validate`` (values): either a request or an InvalidRequest naming a field,
    never a TypeError, OverflowError, UnicodeError or a torch error."""
    cls = REQUESTS[method]
    known = {f.name for f in dataclasses.fields(cls)} | {"request", "method"}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request_dicts(cls))
    def check(d):
        try:
            req = cls.from_dict(d)
        except InvalidRequest as e:
            _one_sentence(e, known)
            return
        assert req.validate() is req  # what validated once validates again, unchanged
        assert cls.from_dict(json.loads(json.dumps(req.to_dict()))) == req

    check()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.none() | TEXT | st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:99", "mps", "meta", "cpu:0", "xla",
                                           " cpu", "CPU", "cuda:-1", "cuda:1e9"]))
def test_device_is_checked_where_every_request_runs(device):
    """The runtime every request runs on checks its device once, with the CLI's sentence, param ``device``."""
    from hindsight.api import Runtime

    try:
        rt = Runtime(device=device, allow_paths=False, models={})
    except InvalidRequest as e:
        _one_sentence(e, {"device"})
        return
    assert rt.device == device
    assert device is None or device.strip().split(":")[0] in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("device, match", [("banana", "Unknown device 'banana'"), ("meta", "not supported")])
def test_bad_device_is_an_invalid_request_naming_device(device, match):
    from hindsight.api import Runtime

    with pytest.raises(InvalidRequest, match=match) as e:
        Runtime(device=device)
    assert e.value.param == "device"


def test_cuda_on_a_cpu_only_torch_is_an_invalid_request():
    import torch

    from hindsight.api import Runtime

    if torch.cuda.is_available():
        pytest.skip("this torch sees a GPU")
    with pytest.raises(InvalidRequest, match="not available") as e:
        Runtime(device="cuda")
    assert e.value.param == "device"
