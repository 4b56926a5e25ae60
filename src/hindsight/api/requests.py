"""One typed request per method. Field names are the library's words; the CLI flags are the same names with
dashes. Every check of user input is here (through :mod:`hindsight.api.checks`), so the CLI, the server and a
Ray worker reject the same requests with the same sentence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from hindsight.api import checks
from hindsight.api.base import Request
from hindsight.api.errors import InvalidRequest

from hindsight.potentials.self_eval import VALUE_RULES
from hindsight.reverse.citation import SEARCHES
from hindsight.reverse.defence import FILTERS
from hindsight.reverse.scorers import PROMPTS
from hindsight.samplers.rain import MIN_VISITS
from hindsight.samplers.resampling import SCHEMES

RESAMPLERS = tuple(SCHEMES)
SCORE_TASKS = tuple(PROMPTS)
RAIN_TASKS = tuple(MIN_VISITS)


@dataclass
class GenerateRequest(Request):
    """Plain sampling: ``n`` completions of one prompt sharing one prefill."""

    method = "generate"
    prompt: str
    n: int = 1
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    raw: bool = False  # the prompt as plain text, without the chat template
    seed: int | None = None
    model: str | None = None

    def validate(self) -> Self:
        checks.sampling(n=self.n, max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k)
        return self


@dataclass
class ScoreRequest(Request):
    """One (query, response) pair scored by a TRLM scorer: total and per-token mean log-likelihood."""

    method = "score"
    query: str
    response: str
    scorer: str = "trlm-fo"
    task: str = "answer"  # which prompt set: answer, retrieval or citation
    model: str | None = None
    reverse_model: str | None = None

    def validate(self) -> Self:
        checks.one_of("task", self.task, SCORE_TASKS, "scoring task")
        checks.scorer(self.scorer, self.reverse_model, self.task)
        return self


@dataclass
class RerankRequest(Request):
    """Best-of-N: sample ``n`` responses and keep the one the scorer likes best."""

    method = "rerank"
    prompt: str
    n: int = 16
    scorer: str = "trlm-fo"
    temperature: float = 0.8
    max_tokens: int = 128
    mean: bool = False  # rank by per-token mean log-likelihood instead of the sum
    seed: int | None = None
    model: str | None = None
    reverse_model: str | None = None

    def validate(self) -> Self:
        checks.sampling(n=self.n, max_tokens=self.max_tokens, temperature=self.temperature)
        checks.scorer(self.scorer, self.reverse_model, "answer")
        return self


@dataclass
class RetrieveRequest(Request):
    """BM25 over ``passages`` (or a ``corpus`` file, where the runtime allows paths), reranked by a scorer."""

    method = "retrieve"
    query: str
    passages: list[str] | None = None
    corpus: str | None = None  # JSONL (id + text or title/abstract) or one passage per line
    top_k: int = 20
    scorer: str | None = None  # None: BM25 only
    mean: bool = False
    max_words: int = 200
    model: str | None = None
    reverse_model: str | None = None
    fusion: str | None = None  # fuse BM25 with the reranker: minmax | z | rrf (hindsight.reverse.fusion)
    alpha: float = 0.5  # the reranker's fusion weight (0 = BM25 alone, 1 = reranker alone)
    fit_alpha: str | None = None  # development queries (JSONL with relevant ids): alpha chosen on them instead

    def validate(self) -> Self:
        if self.fusion is not None:
            from hindsight.reverse.fusion import FUSIONS

            checks.one_of("fusion", self.fusion, FUSIONS)
            checks.in_range("alpha", self.alpha, 0.0, 1.0)
            if self.scorer is None:
                raise InvalidRequest("fusion", "Fusion needs a reranker: give a scorer too.")
        elif self.fit_alpha is not None:
            raise InvalidRequest("fit_alpha", "{param} needs a fusion method (minmax, z or rrf).")
        if (self.passages is None) == (self.corpus is None):
            raise InvalidRequest("passages", "A retrieve request needs exactly one of passages and corpus.")
        if self.passages is not None and not self.passages:
            raise InvalidRequest("passages", "{param} is empty.")
        checks.at_least("top_k", self.top_k, 1)
        checks.at_least("max_words", self.max_words, 1)
        if self.scorer is not None:
            checks.scorer(self.scorer, self.reverse_model, "retrieval")
        return self


@dataclass
class CiteRequest(Request):
    """For each summary sentence, the article sentence it came from (by reverse scoring)."""

    method = "cite"
    summary: str
    article: str  # the article's text
    search: str = "linear"
    scorer: str = "trlm-fo"
    model: str | None = None
    reverse_model: str | None = None

    def validate(self) -> Self:
        checks.one_of("search", self.search, SEARCHES)
        checks.scorer(self.scorer, self.reverse_model, "citation")
        checks.not_empty("summary", self.summary)
        checks.not_empty("article", self.article)
        return self


@dataclass
class DefendRequest(Request):
    """Input filter, then the same filter on queries reverse-generated from the response: block or allow."""

    method = "defend"
    prompt: str
    filter: str = "keyword"
    queries: int = 4
    threshold: float = 0.25  # block when more than this fraction of the queries is flagged
    filter_threshold: float | None = None  # harm score above which a text is flagged (filter's default)
    response: str | None = None  # check this response instead of generating one
    max_tokens: int = 64
    seed: int | None = None
    model: str | None = None
    reverse_model: str | None = None

    def validate(self) -> Self:
        checks.one_of("filter", self.filter, FILTERS)
        checks.at_least("queries", self.queries, 1)
        checks.in_range("threshold", self.threshold, 0, 1, open_high=True)
        if self.filter_threshold is not None:
            checks.finite("filter_threshold", self.filter_threshold)
        checks.at_least("max_tokens", self.max_tokens, 1)
        return self


@dataclass
class SMCRequest(Request):
    """(Twisted) sequential Monte Carlo towards p(x | prompt) * phi(x)."""

    method = "smc"
    prompt: str
    potential: str
    particles: int = 16
    max_tokens: int = 20
    twist: str | None = None  # a registered twist name (or a twist file, where the runtime allows paths)
    resample: str = "systematic"
    ess_threshold: float = 0.5
    min_tokens: int = 0
    raw: bool = False
    seed: int | None = None
    model: str | None = None

    def validate(self) -> Self:
        checks.potential_spec(self.potential)
        checks.at_least("particles", self.particles, 1)
        checks.at_least("max_tokens", self.max_tokens, 1)
        checks.one_of("resample", self.resample, RESAMPLERS, "resampling scheme")
        checks.in_range("ess_threshold", self.ess_threshold, 0, 1)
        checks.in_range("min_tokens", self.min_tokens, 0, self.max_tokens)
        return self


@dataclass
class RainRequest(Request):
    """RAIN: search over token sets guided by an evaluator, rewinding before each commit."""

    method = "rain"
    prompt: str
    task: str = "harmless"  # harmless (HH defaults) or truthful (TruthfulQA)
    max_tokens: int = 48
    max_iters: int = 50
    min_visits: int | None = None  # default: 6 harmless, 16 truthful
    value_threshold: float = 0.8
    evaluator: str = "self"  # 'self' (self-evaluation) or a potential spec
    value_rule: str = "vote"
    tree: bool = False  # also return the search tree
    seed: int | None = None
    model: str | None = None

    def validate(self) -> Self:
        checks.one_of("task", self.task, RAIN_TASKS)
        checks.one_of("value_rule", self.value_rule, VALUE_RULES, "value rule")
        checks.at_least("max_tokens", self.max_tokens, 1)
        checks.at_least("max_iters", self.max_iters, 1)
        if self.min_visits is not None:
            checks.at_least("min_visits", self.min_visits, 0)
        checks.finite("value_threshold", self.value_threshold)
        if self.evaluator not in ("self", "self-eval"):
            checks.potential_spec(self.evaluator, "evaluator")
        return self


REQUESTS: dict[str, type[Request]] = {cls.method: cls for cls in (
    GenerateRequest, ScoreRequest, RerankRequest, RetrieveRequest, CiteRequest, DefendRequest, SMCRequest,
    RainRequest)}
