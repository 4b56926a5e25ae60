"""Every check of user input, written once; request classes call these from ``validate``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hindsight.api.errors import InvalidRequest, blame

REVERSE_SCORERS = ("trlm-ba", "trlm-foba")


def at_least(param: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise InvalidRequest(param, "{param} " + f"must be at least {low} (got {value}).")


def in_range(param: str, value: float, low: float, high: float, *, open_low: bool = False,
             open_high: bool = False) -> None:
    """``low <= value <= high``; an open end excludes that bound (NaN always fails)."""
    ok_low = value > low if open_low else value >= low
    ok_high = value < high if open_high else value <= high
    if not (ok_low and ok_high):
        lb, hb = "(" if open_low else "[", ")" if open_high else "]"
        raise InvalidRequest(param, "{param} " + f"must be in {lb}{low}, {high}{hb} (got {value}).")


def finite(param: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidRequest(param, "{param} " + f"must be a finite number (got {value}).")


def one_of(param: str, value: str, allowed: Sequence[str], what: str | None = None) -> None:
    if value not in allowed:
        raise InvalidRequest(param, f"Unknown {what or param} {value!r}; choose one of {', '.join(allowed)}.")


def limit(value: int | None, param: str = "limit") -> None:
    """An evaluation's item count: None (all) or at least one (0 or a negative number would score nothing, or
    silently one item)."""
    if value is not None:
        at_least(param, value, 1)


def not_empty(param: str, value: str, what: str | None = None) -> None:
    if not value.strip():
        raise InvalidRequest(param, f"The {what or param} is empty.")


def sampling(*, n: int = 1, max_tokens: int = 1, temperature: float = 1.0, top_p: float = 1.0,
             top_k: int = 0) -> None:
    """Sampling settings that cannot work, each named by its request field."""
    from hindsight.lm.base import sampling_problem

    problem = sampling_problem(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    if problem is not None:
        raise InvalidRequest(*problem)


def scorer(name: str, reverse_model: str | None, task: str | None = None, param: str = "scorer") -> None:
    """A known scorer (``trlm-fo@VARIANT`` a known wording for ``task``), and a reverse model where needed."""
    from hindsight.reverse.scorers import PROMPT_VARIANTS, SCORERS

    base, _, variant = name.partition("@")
    if base not in SCORERS:
        raise InvalidRequest(param, f"Unknown scorer {name!r}; choose one of {', '.join(SCORERS)}.")
    if variant and task is not None:
        known = PROMPT_VARIANTS.get(task, {}).get(base, {})
        if variant not in known:
            raise InvalidRequest(param, f"Scorer {base} has no prompt variant {variant!r} for {task}; "
                                        f"known: {', '.join(known) or 'none'}.")
    if base in REVERSE_SCORERS and reverse_model is None:
        raise InvalidRequest("reverse_model", f"Scorer {name} needs a reverse-trained model: set " + "{param}.")


def scorer_list(names: Sequence[str], reverse_model: str | None, param: str = "scorers",
                allow_empty: bool = False) -> None:
    """Every scorer of a list checked before data or models are touched."""
    if not names and not allow_empty:
        raise InvalidRequest(param, "{param} is empty.")
    for name in names:
        scorer(name, "" if reverse_model is None else reverse_model, param=param)
    if reverse_model is None and any(n.partition("@")[0] in REVERSE_SCORERS for n in names):
        raise InvalidRequest("reverse_model", "Scorers trlm-ba / trlm-foba need a reverse-trained model: set "
                                              "{param}.")


def context_window(param: str, tokens: int, limit: int, model: str, what: str) -> None:
    """``tokens`` (known once the text is tokenized, before any forward pass) within the model's context."""
    if tokens > limit:
        raise InvalidRequest(param, f"{what} {tokens:,} tokens, more than {model}'s context window of {limit:,} "
                                    "tokens; shorten the text.")


def device(value: str | None, param: str = "device") -> None:
    """A device torch knows and this machine has (``None``: cuda if available, else cpu)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequest(param, "{param} " + f"must be text such as cpu or cuda (got {value!r}).")
    text(param, value)
    from hindsight.errors import HindsightError
    from hindsight.lm.device import resolve_device

    try:
        resolve_device(value)
    except HindsightError as e:
        raise InvalidRequest(param, str(e)) from None


def potential_spec(spec: str, param: str = "potential") -> None:
    """The spec's grammar and kinds, through the one spec parser (arguments are checked when it is built)."""
    from hindsight.potentials.spec import check_spec

    not_empty(param, spec, "potential spec")
    with blame(param):
        check_spec(spec)


# ---- checks every request gets (run before its own ``validate``) ---------------------------------------------
MAX_ROWS = 4096  # samples, particles, candidates or queries in one request
MAX_NEW_TOKENS = 8192  # new tokens per sequence
MAX_TOKEN_CELLS = 1 << 20  # rows x new tokens: what a request may ask the KV cache to hold
ROW_FIELDS = ("n", "particles", "queries")
NON_EMPTY = ("query", "response")  # texts a scorer cannot score when empty


def text(param: str, value: str) -> None:
    """Text must be valid Unicode (invalid UTF-8 bytes arrive as lone surrogates, which no tokenizer takes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequest(param, "{param} " + f"is not valid UTF-8 text (bad character at {e.start}).") from None


def seed(value: int | None, param: str = "seed") -> None:
    if value is not None and not 0 <= value <= 2**63 - 1:
        raise InvalidRequest(param, "{param} " + f"must be from 0 to 2**63-1 (got {value}).")


def size(fields: dict[str, object]) -> None:
    """Rows and tokens bounded before anything is allocated (a huge ``n`` must not hang the machine)."""
    for name in ROW_FIELDS:
        value = fields.get(name)
        if isinstance(value, int) and value > MAX_ROWS:
            raise InvalidRequest(name, "{param} " + f"must be at most {MAX_ROWS} (got {value}).")
    tokens = fields.get("max_tokens")
    if isinstance(tokens, int) and tokens > MAX_NEW_TOKENS:
        raise InvalidRequest("max_tokens", "{param} " + f"must be at most {MAX_NEW_TOKENS} (got {tokens}).")
    rows = max([v for k in ROW_FIELDS if isinstance(v := fields.get(k), int)] or [1])
    if isinstance(tokens, int) and rows * tokens > MAX_TOKEN_CELLS:
        raise InvalidRequest("max_tokens", f"{rows} rows x {tokens} new tokens is more than one request may hold "
                                           f"({MAX_TOKEN_CELLS:,} tokens); lower " + "{param} or the row count.")


def common(fields: dict[str, object]) -> None:
    """What holds for every request: valid text, no NaN, a usable seed, no empty stop strings, bounded size."""
    for name, value in fields.items():
        if isinstance(value, str):
            text(name, value)
            if name in NON_EMPTY:
                not_empty(name, value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    text(name, item)
                    if name == "stop" and not item:
                        raise InvalidRequest(name, "{param} " + "strings must not be empty (an empty one would "
                                                                "stop every sample at once).")
        elif isinstance(value, float) and math.isnan(value):
            raise InvalidRequest(name, "{param} " + "must be a number (got nan).")
    seed(fields.get("seed"))  # type: ignore[arg-type]
    size(fields)
