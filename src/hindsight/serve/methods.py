"""The one place the server reaches the methods: the ``"hindsight"`` object becomes an :mod:`hindsight.api`
request (which does all the validation) and runs through ``api.run``.

``prepare`` maps a request's ``"hindsight"`` object plus its OpenAI fields onto the api request type, validates
it (an :class:`~hindsight.api.InvalidRequest` becomes a 400 naming the OpenAI field, or ``hindsight.<field>``)
and returns a function that runs it on a worker thread, giving back ``{"choices": [...], "hindsight": {...}}``.
What is checked here is only what the OpenAI face adds: which fields may combine (``stream``, ``stop``, ``n``),
and resource bounds a server puts on a request. Plain sampling is checked here too (``GenerateRequest``) but
runs in the shared batch (:mod:`hindsight.serve.scheduler`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from hindsight.api import REQUESTS, InvalidRequest, Request, Runtime, run
from hindsight.errors import HindsightError
from hindsight.lm.base import LanguageModel
from hindsight.serve.errors import APIError, bad
from hindsight.serve.schemas import Parsed

METHODS = {"sample": "generate", "best_of_n": "rerank", "smc": "smc", "rain": "rain"}  # hindsight -> api
RENAMED = {"best_of_n": {"candidates": "n"}}  # a setting whose api name clashes with an OpenAI field
OWNED = {"prompt", "model", "max_tokens", "seed", "raw", "stop", "temperature", "top_p", "tree", "reverse_model",
         "n"}  # api fields the OpenAI body sets (a hindsight object may not)
BOUNDS = {"candidates": 64, "particles": 256, "max_iters": 200}  # what one request may cost on this server
TWIST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

Runner = Callable[[Callable[[str], None] | None], dict[str, Any]]


def method_of(p: Parsed) -> str:
    m = p.method.get("method", "sample")
    if not isinstance(m, str) or m not in METHODS:
        raise bad(f"Unknown method {m!r}; choose one of {', '.join(METHODS)}.", "hindsight.method")
    return m


def openai_param(param: str, method: str, kind: str) -> str:
    """The OpenAI-side name of an api request field."""
    back = {v: k for k, v in RENAMED.get(method, {}).items()}
    if param in back:
        return f"hindsight.{back[param]}"
    if param == "prompt":
        return "messages" if kind == "chat" else "prompt"
    if param in OWNED:
        return param
    return f"hindsight.{param}"


def invalid(e: InvalidRequest, method: str, kind: str) -> APIError:
    name = openai_param(e.param, method, kind)
    return bad(str(e.renamed(name)), name)


def build(p: Parsed, lm: LanguageModel, text: str) -> tuple[str, Request]:
    """The api request for ``p`` (validated): the hindsight settings plus the OpenAI fields they go with."""
    method = method_of(p)
    settings = {k: v for k, v in p.method.items() if k != "method"}
    for key, value in settings.items():
        if key in OWNED:
            raise bad(f"hindsight.{key} is set by the OpenAI request itself, not inside 'hindsight'.",
                      f"hindsight.{key}", "unknown_parameter")
        if key in BOUNDS and isinstance(value, int) and value > BOUNDS[key]:
            raise bad(f"hindsight.{key} can be at most {BOUNDS[key]} on this server (got {value}).",
                      f"hindsight.{key}")
    d: dict[str, Any] = {RENAMED.get(method, {}).get(k, k): v for k, v in settings.items()}
    d.update(method=METHODS[method], prompt=text, max_tokens=p.max_tokens, seed=p.seed, model=lm.name)
    if method in ("sample", "smc"):
        d["raw"] = p.kind == "completion"
    if method == "sample":
        d.update(n=p.n, temperature=p.temperature, top_p=p.top_p, stop=p.stop)
    if method == "best_of_n" and "temperature" in p.explicit:
        d["temperature"] = p.temperature
    if method == "smc" and isinstance(d.get("twist"), str) and (not TWIST_NAME.fullmatch(d["twist"])
                                                               or ".." in d["twist"]):
        raise bad("hindsight.twist must be the name of a twist registered at start-up, not a path.",
                  "hindsight.twist")
    try:
        return method, REQUESTS[METHODS[method]].from_dict(d)
    except InvalidRequest as e:
        raise invalid(e, method, p.kind) from None


def prompt_text(p: Parsed, method: str) -> str:
    """The api requests take one prompt text: a completions prompt, or the one user message of a chat."""
    if p.kind != "chat":
        if method in ("best_of_n", "rain"):
            raise bad(f"Method {method} answers a user message: use /v1/chat/completions.", "hindsight.method")
        return p.prompt
    if method == "sample":
        return "\n".join(m["content"] for m in p.prompt)  # for the checks only: sampling reads the whole chat
    if len(p.prompt) != 1 or p.prompt[0]["role"] != "user":
        raise bad(f"Method {method} takes exactly one user message.", "messages")
    return p.prompt[0]["content"]


def _face_rules(p: Parsed, method: str) -> None:
    """Which OpenAI fields combine with which method (the api knows nothing of streams or choices)."""
    if method == "sample":
        return
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
    if method == "rain" and p.n != 1:
        raise bad("RAIN answers with one response: n must be 1.", "n")
    if method == "best_of_n" and p.n > p.method.get("candidates", 16):
        raise bad(f"n ({p.n}) cannot exceed hindsight.candidates.", "n")


def check_sample(p: Parsed, lm: LanguageModel) -> int:
    """Plain sampling through ``GenerateRequest``'s checks; returns its ``top_k``."""
    _, req = build(p, lm, prompt_text(p, "sample"))
    return req.top_k


def prepare(lm: LanguageModel, p: Parsed, runtime: Runtime) -> Runner:
    """Check a method request fully (before it waits in a queue) and return what runs it."""
    method = method_of(p)
    _face_rules(p, method)
    _, req = build(p, lm, prompt_text(p, method))

    def go(on_text: Callable[[str], None] | None) -> dict[str, Any]:
        before = lm.counters.snapshot()
        try:
            result = _rain_streaming(lm, req, on_text) if on_text is not None else run(req, runtime)
        except InvalidRequest as e:  # found while running (an unknown twist): still that field's fault
            raise invalid(e, method, p.kind) from None
        return ANSWERS[method](lm, p, result, lm.counters.since(before))

    return go


def _rain_streaming(lm: LanguageModel, req: Any, on_text: Callable[[str], None]) -> dict[str, Any]:
    """RAIN (a validated ``RainRequest``) with each commit reported as it happens: RAIN hints its evaluator
    after every commit, so that hint is the hook. ``api.run`` has no such hook; this mirrors its RAIN runner."""
    from hindsight.potentials.self_eval import make_evaluator
    from hindsight.samplers.rain import Rain, RainConfig

    cfg = RainConfig.for_task(req.task, max_tokens=req.max_tokens, max_iters=req.max_iters,
                              min_visits=req.min_visits, value_threshold=req.value_threshold, seed=req.seed)
    try:
        ev = make_evaluator(req.evaluator, lm, req.task, req.value_rule)
    except HindsightError as e:
        raise InvalidRequest("evaluator", str(e)) from None
    hint = ev.hint_prefix

    def committed(prompt: str, so_far: str) -> None:
        on_text(so_far)
        hint(prompt, so_far)

    ev.hint_prefix = committed
    res = Rain(lm, ev, cfg).run(req.prompt)
    return {"text": res.text, "tokens": res.tokens, "finish_reason": res.finish_reason, "value": res.value,
            "iterations": res.iterations, "evaluator": ev.name, "steps": res.as_dict()["steps"]}


def _eos_free(tokens: list[int], lm: LanguageModel) -> list[int]:
    return [t for t in tokens if t not in lm.eos_token_ids]


def _cost(spent) -> dict[str, Any]:
    return {"forward_passes": spent.forward_passes, "tokens_computed": spent.tokens}


def _best_of_n(lm, p: Parsed, res: dict, spent) -> dict[str, Any]:
    cands = res["candidates"]
    order = sorted(range(len(cands)), key=lambda i: -(cands[i]["score"] if cands[i]["score"] is not None
                                                      else float("-inf")))[: p.n]
    choices = [{"text": cands[i]["text"], "count": cands[i]["tokens"] - (cands[i]["finish_reason"] == "eos"),
                "finish_reason": "length" if cands[i]["finish_reason"] == "length" else "stop"} for i in order]
    info = {"method": "best_of_n", "scorer": res["scorer"],
            "candidates": [{"text": c["text"], "score": c["score"], "logprob": c["logprob"]} for c in cands],
            "choices": [{"candidate": i, "score": cands[i]["score"]} for i in order], **_cost(spent)}
    return {"choices": choices, "hindsight": info}


def _smc(lm, p: Parsed, res: dict, spent) -> dict[str, Any]:
    samples = res["samples"]
    weights = torch.tensor([s["weight"] for s in samples], dtype=torch.float64)
    gen = torch.Generator().manual_seed(p.seed if p.seed is not None else 0)
    picks = torch.multinomial(weights, p.n, replacement=True, generator=gen).tolist()
    choices = []
    for k in picks:
        seq = samples[k]["tokens"]
        body = _eos_free(seq, lm)
        choices.append({"text": samples[k]["text"], "count": len(body),
                        "finish_reason": "stop" if len(body) < len(seq) else "length"})
    info = {"method": "smc", "potential": res["potential"], "twist": res["twist"], "log_z": res["log_z"],
            "ess": res["ess"], "resampled_steps": res["resampled_steps"],
            "particles": [{"text": s["text"], "weight": s["weight"], "log_phi": s["log_phi"]} for s in samples],
            "choices": [{"particle": k, "weight": samples[k]["weight"]} for k in picks], **_cost(spent)}
    return {"choices": choices, "hindsight": info}


def _rain(lm, p: Parsed, res: dict, spent) -> dict[str, Any]:
    body = _eos_free(res["tokens"], lm)
    choice = {"text": res["text"], "count": len(body),
              "finish_reason": "length" if res["finish_reason"] == "length" else "stop"}
    info = {"method": "rain", "evaluator": res["evaluator"], "value": res["value"], "iterations": res["iterations"],
            "steps": res["steps"], **_cost(spent)}
    return {"choices": [choice], "hindsight": info}


ANSWERS = {"best_of_n": _best_of_n, "smc": _smc, "rain": _rain}


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


def runtime_for(lm: LanguageModel, twists: dict[str, str]) -> Runtime:
    """The server's runtime: this one model and the registered twists, never a path from a request. Each twist is
    loaded once here so that a file that does not fit the model stops the server at start-up."""
    rt = Runtime(allow_paths=False, models={lm.name: lm}, twists=twists)
    for name in twists:
        rt.twist(name, lm)
    return rt
