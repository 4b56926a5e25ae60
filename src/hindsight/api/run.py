"""``run(request, runtime) -> dict``: the one entry every face (CLI, server, Ray worker) calls.

A result is a JSON object with no NaN or infinity: a non-finite number becomes ``null`` and its path and value
are listed under ``"nonfinite"`` (for example ``{"log_z": "-inf"}`` when every particle had zero weight).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from hindsight.api import checks
from hindsight.api.errors import InvalidRequest, blame
from hindsight.api.requests import (REQUESTS, CiteRequest, DefendRequest, GenerateRequest, RainRequest,
                                    RerankRequest, RetrieveRequest, ScoreRequest, SMCRequest)
from hindsight.api.runtime import Runtime
from hindsight.api.base import Request

Runner = Callable[[Any, Runtime], dict[str, Any]]


def _clean(obj: Any, path: str, bad: dict[str, str]) -> Any:
    """A copy with plain JSON types only; non-finite floats become None and are recorded in ``bad``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # a 0-d tensor or numpy scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        bad[path] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None
    return obj


def json_result(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` made safe for ``json.dumps(..., allow_nan=False)``."""
    bad: dict[str, str] = {}
    out = _clean(result, "", bad)
    if bad:
        out["nonfinite"] = bad
    return out


def _cost_since(lm: Any, before: Any) -> dict[str, float]:
    return lm.counters.since(before).as_dict()


def run_generate(req: GenerateRequest, rt: Runtime) -> dict[str, Any]:
    lm = rt.model(req.model)
    before = lm.counters.snapshot()
    t0 = time.perf_counter()
    with blame("prompt"):
        samples = lm.generate(req.prompt, n=req.n, max_tokens=req.max_tokens, temperature=req.temperature,
                              top_p=req.top_p, top_k=req.top_k, stop=req.stop, seed=req.seed, use_chat=not req.raw)
    seconds = time.perf_counter() - t0
    return {"model": lm.name, "prompt": req.prompt, "seed": req.seed, "seconds": round(seconds, 3),
            "settings": {"n": req.n, "max_tokens": req.max_tokens, "temperature": req.temperature,
                         "top_p": req.top_p, "top_k": req.top_k, "stop": req.stop},
            "samples": [s.as_dict() for s in samples], "cost": _cost_since(lm, before)}


def run_score(req: ScoreRequest, rt: Runtime) -> dict[str, Any]:
    sc = rt.scorer(req.scorer, req.task, req.model, req.reverse_model)
    with blame("query"):
        ctx, tgt = sc.encode_pair(req.query, req.response, truncate=False)  # one pair: never cut it silently
    checks.context_window("response", len(ctx) + len(tgt), sc.lm.max_length, sc.lm.name,
                          f"With scorer {req.scorer}'s prompt the query and response are")
    with blame("query"):
        s = sc.score([req.query], [req.response])
    return {"scorer": req.scorer, "task": req.task, "model": sc.lm.name, "total": float(s.total[0]),
            "tokens": int(s.tokens[0]), "mean": float(s.mean[0])}


def run_rerank(req: RerankRequest, rt: Runtime) -> dict[str, Any]:
    from hindsight.reverse.rerank import best_of_n

    sc = rt.scorer(req.scorer, "answer", req.model, req.reverse_model)
    lm = rt.model(req.model)
    t0 = time.perf_counter()
    with blame("prompt"):
        res = best_of_n(lm, req.prompt, sc, n=req.n, temperature=req.temperature, max_tokens=req.max_tokens,
                        seed=req.seed, normalise=req.mean)
    return {"prompt": req.prompt, "scorer": req.scorer, "mean": req.mean, "seed": req.seed,
            "seconds": round(time.perf_counter() - t0, 3), **res.as_dict()}


def run_retrieve(req: RetrieveRequest, rt: Runtime) -> dict[str, Any]:
    from hindsight.reverse.retrieval import (BM25Index, Passage, fit_retrieval_alpha, read_corpus, read_dev_queries,
                                             retrieve)

    if req.corpus is not None:
        path = rt.file(req.corpus, "corpus", "corpus")
        with blame("corpus"):
            passages = read_corpus(path)
    else:
        passages = [Passage(str(i), t.strip()) for i, t in enumerate(req.passages or []) if t.strip()]
    dev = None
    if req.fit_alpha is not None:
        path = rt.file(req.fit_alpha, "fit_alpha", "development queries")
        with blame("fit_alpha"):
            dev = read_dev_queries(path)
    sc = rt.scorer(req.scorer, "retrieval", req.model, req.reverse_model) if req.scorer else None
    index = BM25Index(passages)
    alpha, fused = req.alpha, {}
    if dev is not None and req.fusion is not None and sc is not None:
        fit = fit_retrieval_alpha(dev, index, sc, method=req.fusion, top_k=req.top_k, normalise=req.mean,
                                  max_words=req.max_words)
        alpha, fused = fit.alpha, {"fit": fit.as_dict()}
    hits = retrieve(req.query, index, top_k=req.top_k, scorer=sc, normalise=req.mean,
                    max_words=req.max_words, fusion=req.fusion, alpha=alpha)
    fused = {"fusion": req.fusion, "alpha": alpha, **fused} if req.fusion else {}
    return {"query": req.query, "scorer": req.scorer or "bm25", **fused, "hits": hits}


def run_cite(req: CiteRequest, rt: Runtime) -> dict[str, Any]:
    from hindsight.reverse.citation import cite, split_sentences
    from hindsight.reverse.scorers import make_scorer

    lm = rt.model(req.model)
    rev = rt.reverse_model(req.reverse_model) if req.reverse_model else None
    with blame("scorer"):
        sc = make_scorer(req.scorer, lm, task="citation", reverse_lm=rev)
    results = cite(sc, req.summary, req.article, req.search)
    sentences = split_sentences(req.article)
    return {"model": lm.name, "scorer": req.scorer, "search": req.search, "article_sentences": len(sentences),
            "citations": [{"summary_sentence": s, "source_index": a.index, "source_sentence": sentences[a.index],
                           **a.as_dict()} for s, a in results]}


def run_defend(req: DefendRequest, rt: Runtime) -> dict[str, Any]:
    from hindsight.reverse.defence import QUERY_SAMPLING, defend, make_filter
    from hindsight.reverse.generation import make_reverse_generator

    lm = rt.model(req.model)
    with blame("filter"):
        filt = make_filter(req.filter, lm, req.filter_threshold)
    rev = rt.reverse_model(req.reverse_model) if req.reverse_model else None
    gen = make_reverse_generator(lm, reverse_lm=rev, **QUERY_SAMPLING)

    def respond(prompt: str) -> str:
        return lm.generate(prompt, n=1, max_tokens=req.max_tokens, temperature=0.0)[0].text

    v = defend(req.prompt, filt, gen, respond=respond, response=req.response, n_queries=req.queries,
               threshold=req.threshold, seed=req.seed)
    return {"model": lm.name, "filter": req.filter, "generator": gen.name, "threshold": req.threshold,
            "filter_threshold": filt.threshold, **v.as_dict()}


def run_smc(req: SMCRequest, rt: Runtime) -> dict[str, Any]:
    from hindsight.potentials import parse_potential
    from hindsight.samplers.smc import run_smc as smc

    lm = rt.model(req.model)
    with blame("prompt"):
        ids = lm.prompt_ids(req.prompt, use_chat=not req.raw)
    with blame("potential"):
        pot = parse_potential(req.potential, lm=lm, prompt_ids=ids)
    head = rt.twist(req.twist, lm) if req.twist is not None else None
    res = smc(lm, ids, pot, req.particles, req.max_tokens, twist=head, resample=req.resample,
              ess_threshold=req.ess_threshold, seed=req.seed, min_tokens=req.min_tokens)
    return {"model": lm.name, "prompt": req.prompt, "potential": pot.name, "twist": req.twist, "seed": req.seed,
            "particles": req.particles, "max_tokens": req.max_tokens, "sampler": "twisted" if head else "bootstrap",
            "resampled": sum(res.resampled), **res.as_dict()}


def run_rain(req: RainRequest, rt: Runtime) -> dict[str, Any]:
    from hindsight.potentials.self_eval import make_evaluator
    from hindsight.samplers.rain import Rain, RainConfig

    cfg = RainConfig.for_task(req.task, max_tokens=req.max_tokens, max_iters=req.max_iters,
                              min_visits=req.min_visits, value_threshold=req.value_threshold, seed=req.seed)
    lm = rt.model(req.model)
    with blame("evaluator"):
        ev = make_evaluator(req.evaluator, lm, req.task, req.value_rule)
    with blame("prompt"):
        res = Rain(lm, ev, cfg).run(req.prompt)
    out = {"text": res.text, "iterations": res.iterations, "forward_passes": res.forward_passes,
           "seconds": round(res.seconds, 3), "value": res.value, "evaluator": ev.name,
           "steps": res.as_dict()["steps"], "tokens": res.tokens, "finish_reason": res.finish_reason}
    if req.tree:
        out["tree"] = res.tree_json()
    return out


RUNNERS: dict[type[Request], Runner] = {
    GenerateRequest: run_generate, ScoreRequest: run_score, RerankRequest: run_rerank,
    RetrieveRequest: run_retrieve, CiteRequest: run_cite, DefendRequest: run_defend, SMCRequest: run_smc,
    RainRequest: run_rain,
}


def run(request: Request, runtime: Runtime) -> dict[str, Any]:
    """Validate ``request``, run it on ``runtime``'s models and return a JSON-safe result."""
    request.validate()
    runner = RUNNERS.get(type(request))
    if runner is None:
        raise InvalidRequest("method", f"No runner for {type(request).__name__}.")
    return json_result(runner(request, runtime))


def run_dict(d: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """A request as a JSON object whose ``"method"`` field picks its type (for the server and Ray workers)."""
    if not isinstance(d, dict):
        raise InvalidRequest("request", "A request must be a JSON object.")
    method = d.get("method")
    if method not in REQUESTS:
        raise InvalidRequest("method", f"Unknown method {method!r}; choose one of {', '.join(REQUESTS)}.")
    return run(REQUESTS[method].from_dict(d), runtime)
