"""The one place the server reaches the samplers: best-of-N with a (reverse) scorer, SMC and RAIN.

``prepare`` checks a request's ``"hindsight"`` object and returns a function that runs it (on a worker
thread) and gives back ``{"choices": [...], "hindsight": {...}}``. Plain sampling never comes here: it is
batched across requests by :mod:`hindsight.serve.scheduler`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.lm.base import LanguageModel
from hindsight.serve.errors import bad
from hindsight.serve.schemas import Parsed

METHODS = ("sample", "best_of_n", "smc", "rain")
SETTINGS = {
    "sample": {"top_k": int},
    "best_of_n": {"scorer": str, "candidates": int, "mean": bool},
    "smc": {"potential": str, "particles": int, "twist": str, "resample": str, "ess_threshold": float,
            "min_tokens": int},
    "rain": {"evaluator": str, "task": str, "max_iters": int, "min_visits": int, "value_threshold": float,
             "value_rule": str},
}
LIMITS = {"candidates": (1, 64), "particles": (1, 256), "max_iters": (1, 200), "min_visits": (0, 200),
          "min_tokens": (0, 4096), "top_k": (0, 1_000_000)}
TWIST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

Runner = Callable[[Callable[[str], None] | None], dict[str, Any]]


def method_of(p: Parsed) -> str:
    """The requested method (``sample`` without a hindsight object), its settings checked for type."""
    m = p.method.get("method", "sample")
    if m not in METHODS:
        raise bad(f"Unknown method {m!r}; choose one of {', '.join(METHODS)}.", "hindsight.method")
    allowed = SETTINGS[m]
    for key, value in p.method.items():
        if key == "method":
            continue
        if key not in allowed:
            raise bad(f"Method {m} has no setting {key!r} (it takes {', '.join(allowed) or 'none'}).",
                      f"hindsight.{key}", "unknown_parameter")
        _check_type(key, value, allowed[key])
    return m


def _check_type(key: str, value: Any, kind: type) -> None:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise bad(f"hindsight.{key} must be {'a number' if kind is float else kind.__name__}.", f"hindsight.{key}",
                  "invalid_type")
    if key in LIMITS and not LIMITS[key][0] <= value <= LIMITS[key][1]:
        lo, hi = LIMITS[key]
        raise bad(f"hindsight.{key} must be between {lo} and {hi} (got {value}).", f"hindsight.{key}")


def _user_text(p: Parsed, method: str) -> str:
    """best_of_n and RAIN score and answer one user message (their scorers need its text)."""
    if p.kind != "chat":
        raise bad(f"Method {method} answers a user message: use /v1/chat/completions.", "hindsight.method")
    if len(p.prompt) != 1 or p.prompt[0]["role"] != "user":
        raise bad(f"Method {method} takes exactly one user message.", "messages")
    return p.prompt[0]["content"]


def _refuse_sampling_fields(p: Parsed, method: str) -> None:
    for key in ("stop", "logprobs", "top_logprobs"):
        if key in p.explicit and getattr(p, key):
            raise bad(f"'{key}' is not supported with method {method}.", key, "unsupported_parameter")
    if method in ("smc", "rain"):
        for key in ("temperature", "top_p"):
            if key in p.explicit and getattr(p, key) != 1.0:
                raise bad(f"'{key}' does not apply to {method}: it proposes from the model itself.", key,
                          "unsupported_parameter")
    if method != "rain" and p.stream:
        raise bad(f"Streaming is not available for {method}: its answer is known only when every candidate has "
                  "been scored (RAIN streams each committed piece).", "stream", "unsupported_parameter")


def prepare(lm: LanguageModel, p: Parsed, prompt_ids: list[int], twists: dict[str, Any]) -> Runner:
    """Check a method request fully (before it waits in a queue) and return what runs it."""
    method = method_of(p)
    _refuse_sampling_fields(p, method)
    s = p.method
    if method == "best_of_n":
        return _best_of_n(lm, p, _user_text(p, method), s)
    if method == "smc":
        return _smc(lm, p, prompt_ids, s, twists)
    if method == "rain":
        if p.n != 1:
            raise bad("RAIN answers with one response: n must be 1.", "n")
        return _rain(lm, p, _user_text(p, method), s)
    raise bad("Plain sampling is not a method request.", "hindsight.method")


def _library(param: str, fn: Callable[[], Any]) -> Any:
    """Build something a request names (a scorer, a potential): its errors are that field's 400."""
    try:
        return fn()
    except HindsightError as e:
        raise bad(str(e), param) from None


def _eos_free(tokens: list[int], lm: LanguageModel) -> list[int]:
    return [t for t in tokens if t not in lm.eos_token_ids]


def _best_of_n(lm: LanguageModel, p: Parsed, text: str, s: dict) -> Runner:
    from hindsight.reverse.rerank import best_of_n
    from hindsight.reverse.scorers import make_scorer

    k = s.get("candidates", 16)
    if p.n > k:
        raise bad(f"n ({p.n}) cannot exceed hindsight.candidates ({k}).", "n")
    name = s.get("scorer", "trlm-fo")
    scorer = _library("hindsight.scorer", lambda: make_scorer(name, lm))
    temperature = p.temperature if "temperature" in p.explicit else 0.8  # the paper's setting

    def run(_on_text) -> dict[str, Any]:
        before = lm.counters.snapshot()
        res = best_of_n(lm, text, scorer, n=k, temperature=temperature, max_tokens=p.max_tokens, seed=p.seed,
                        normalise=bool(s.get("mean", False)))
        order = sorted(range(k), key=lambda i: -res.candidates[i]["score"])[: p.n]
        choices = []
        for i in order:
            c = res.candidates[i]
            ids = _eos_free(lm.encode(c["text"]), lm) if c["text"] else []
            choices.append({"text": c["text"], "count": c["tokens"] - (c["finish_reason"] == "eos"), "ids": ids,
                            "finish_reason": "length" if c["finish_reason"] == "length" else "stop"})
        info = {"method": "best_of_n", "scorer": name, "candidates": [
            {"text": c["text"], "score": c["score"], "logprob": c["logprob"]} for c in res.candidates],
            "choices": [{"candidate": i, "score": res.candidates[i]["score"]} for i in order],
            **_cost(lm, before)}
        return {"choices": choices, "hindsight": info}

    return run


def _cost(lm: LanguageModel, before) -> dict[str, Any]:
    spent = lm.counters.since(before)
    return {"forward_passes": spent.forward_passes, "tokens_computed": spent.tokens}


def _smc(lm: LanguageModel, p: Parsed, ids: list[int], s: dict, twists: dict[str, Any]) -> Runner:
    from hindsight.potentials import parse_potential
    from hindsight.samplers.resampling import get_scheme
    from hindsight.samplers.smc import run_smc

    if "potential" not in s:
        raise bad("Method smc needs hindsight.potential (e.g. \"sentiment:positive\").", "hindsight.potential",
                  "missing_required_parameter")
    head, name = None, s.get("twist")
    if name is not None:
        if not TWIST_NAME.fullmatch(name) or ".." in name:
            raise bad("hindsight.twist must be the name of a twist registered at start-up, not a path.",
                      "hindsight.twist")
        if name not in twists:
            known = ", ".join(sorted(twists)) or "none"
            raise bad(f"Unknown twist {name!r}; this server has: {known}.", "hindsight.twist")
        head = twists[name]
    particles = s.get("particles", 16)
    resample, ess = s.get("resample", "systematic"), float(s.get("ess_threshold", 0.5))
    _library("hindsight.resample", lambda: get_scheme(resample))
    if not 0 <= ess <= 1:
        raise bad(f"hindsight.ess_threshold must be in [0, 1] (got {ess}).", "hindsight.ess_threshold")
    min_tokens = s.get("min_tokens", 0)
    if min_tokens > p.max_tokens:
        raise bad("hindsight.min_tokens cannot exceed max_tokens.", "hindsight.min_tokens")
    pot = _library("hindsight.potential", lambda: parse_potential(s["potential"], lm=lm, prompt_ids=ids))

    def run(_on_text) -> dict[str, Any]:
        before = lm.counters.snapshot()
        res = run_smc(lm, ids, pot, particles, p.max_tokens, twist=head, resample=resample, ess_threshold=ess,
                      seed=p.seed, min_tokens=min_tokens)
        gen = torch.Generator().manual_seed(p.seed if p.seed is not None else 0)
        picks = res.draw(p.n, generator=gen)
        choices = []
        for k in picks:
            seq = res.sequences[k]
            body = _eos_free(seq, lm)
            choices.append({"text": res.texts[k], "count": len(body), "ids": body,
                            "finish_reason": "stop" if len(body) < len(seq) else "length"})
        info = {"method": "smc", "potential": pot.name, "twist": name, "log_z": res.log_z,
                "ess": [round(e, 4) for e in res.ess],
                "resampled_steps": [t for t, r in enumerate(res.resampled) if r],
                "particles": [{"text": t, "weight": float(w), "log_phi": float(lp)}
                              for t, w, lp in zip(res.texts, res.weights, res.log_phi)],
                "choices": [{"particle": k, "weight": float(res.weights[k])} for k in picks],
                **_cost(lm, before)}
        return {"choices": choices, "hindsight": info}

    return run


def _rain(lm: LanguageModel, p: Parsed, text: str, s: dict) -> Runner:
    from hindsight.evaluation.rain_eval import make_rain_evaluator
    from hindsight.samplers.rain import Rain, RainConfig

    task = s.get("task", "harmless")
    cfg = _library("hindsight.task", lambda: RainConfig.for_task(
        task, max_tokens=p.max_tokens, max_iters=s.get("max_iters"), min_visits=s.get("min_visits"),
        value_threshold=s.get("value_threshold"), seed=p.seed))
    _library("hindsight.max_iters", cfg.check)
    rule = s.get("value_rule", "vote")
    if rule not in ("vote", "soft"):
        raise bad(f"Unknown value rule {rule!r}; choose vote or soft.", "hindsight.value_rule")
    spec = s.get("evaluator", "self")
    ev = _library("hindsight.evaluator", lambda: make_rain_evaluator(spec, lm, task, value_rule=rule))

    def run(on_text) -> dict[str, Any]:
        if on_text is not None:  # stream each committed piece: RAIN hints its evaluator after every commit
            hint = ev.hint_prefix

            def committed(prompt: str, so_far: str) -> None:
                on_text(so_far)
                hint(prompt, so_far)

            ev.hint_prefix = committed
        res = Rain(lm, ev, cfg).run(text)
        body = _eos_free(res.tokens, lm)
        choice = {"text": res.text, "count": len(body), "ids": body,
                  "finish_reason": "length" if res.finish_reason == "length" else "stop"}
        info = {"method": "rain", "evaluator": ev.name, "value": res.value, "iterations": res.iterations,
                "steps": res.steps, "forward_passes": res.forward_passes, "tokens_computed": res.tokens_computed}
        return {"choices": [choice], "hindsight": info}

    return run


def twist_specs(specs: list[str]) -> dict[str, str]:
    """``NAME=FILE`` pairs from the command line, checked before anything is loaded."""
    out: dict[str, str] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not path:
            raise HindsightError(f"--twist takes NAME=FILE (got {spec!r}).")
        if not TWIST_NAME.fullmatch(name) or ".." in name:
            raise HindsightError(f"Twist name {name!r} must be letters, digits, '_', '.' or '-'.")
        if name in out:
            raise HindsightError(f"Twist name {name!r} is given twice.")
        out[name] = path
    return out


def load_twists(lm: LanguageModel, specs: dict[str, str]) -> dict[str, Any]:
    """Each registered twist loaded once (``torch.load(weights_only=True)``) and checked against ``lm``."""
    from hindsight.twists.checkpoint import load_twist

    return {name: load_twist(path, device=lm.device, lm=lm)[0] for name, path in specs.items()}
