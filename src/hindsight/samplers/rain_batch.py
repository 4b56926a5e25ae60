"""Many RAIN searches advanced together: their forwards, evaluations and embeddings batched across prompts.

A search (:meth:`hindsight.samplers.rain.Rain._search`) is a generator: whenever it needs the model, the
evaluator or the embedder it yields a request and is resumed with the answer. :func:`stream_searches` keeps a
number of searches going (the next one starts as soon as one ends), collects the pending requests of all of
them and answers each kind with one batched call:

- :class:`Open` (start decoding from the committed response + some tokens) and :class:`Step` (the next rows of
  that decoding, each a (parent row, token) pair) become padded multi-prompt forwards over
  :class:`hindsight.lm.ragged.Rows` — one for all the opens, one for all the steps;
- :class:`Judge` becomes one ``Evaluator.values_many`` call, :class:`Embed` one embedder call;
- :class:`Commit` (append a committed token set to a search's cached response) costs no forward of its own:
  with the set's kept keys/values they are appended as they are, else the tokens go in front of the search's
  next open and the response is cut back out of that row;
- :class:`Keep` copies the keys/values of tokens a decoding has fed out of its rows, so that a search can hand
  them back in a later :class:`Open` (``parts``) instead of feeding those tokens again.

A search sees exactly the answers it would see alone (its own random generator, its own tree); only float
rounding of a padded batch can differ, so each prompt's answer, iteration count and tree match a run alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.lm import ragged
from hindsight.lm.base import LanguageModel
from hindsight.lm.ragged import Columns, Rows


@dataclass
class Open:
    """Start a decoding: one row after the committed response and ``tokens``; answered with :class:`Opened`.

    ``parts`` are kept keys/values of the first of ``tokens`` (in order): those tokens are not fed again. At
    least the last token must be left to feed, unless ``tokens`` is empty."""

    tokens: list[int]
    parts: Sequence[Columns] = ()


@dataclass
class Opened:
    """The answer to an :class:`Open`: the next-token log-probs ``[1, V]`` after its tokens, and the keys/values
    of the tokens that were fed (``tokens[start:]``)."""

    logp: torch.Tensor
    fed: Columns
    start: int


@dataclass
class Keep:
    """Keys/values of the last ``count`` tokens of rows of the current decoding, ``(row, count)`` each (no
    forward); answered with a list of :class:`Columns`."""

    rows: list[tuple[int, int]]


@dataclass
class Step:
    """The next rows of the current decoding, ``(parent row, token)`` each; answered with ``[len(keys), V]``."""

    keys: list[tuple[int, int]]


@dataclass
class Judge:
    """Values of these texts as responses to the search's prompt; answered with a float64 tensor."""

    texts: list[str]


@dataclass
class Embed:
    """Unit embeddings of these texts; answered with ``[len(texts), d]`` or None (embeddings off)."""

    texts: list[str]


@dataclass
class Commit:
    """Append ``tokens`` to the search's cached response; answered with None.

    With all their keys/values and the next-token log-probs after them (``kv`` with ``kv.after``) this costs
    nothing; else the tokens are fed in front of the search's next open."""

    tokens: list[int]
    kv: Columns | None = None


Request = Open | Step | Judge | Embed | Commit | Keep
Search = Generator[Request, Any, Any]
JudgeMany = Callable[[Sequence[tuple[str, Sequence[str]]]], list[torch.Tensor]]
EmbedFn = Callable[[Sequence[str]], torch.Tensor | None]


MERGE_WASTE = 24  # padding row-tokens worth saving a forward for (on a CPU a forward's fixed cost is about this)


def _decode_round(lm: LanguageModel, session: Rows | None, owned: dict[int, list[int]], roots: list[Rows],
                  pending: dict[int, list[int]], opens: dict[int, Open],
                  steps: dict[int, Step]) -> tuple[Rows | None, dict[int, list[int]], dict]:
    """Answer all opens and steps: one forward for the steps and one for the opens, or a single forward for both
    when padding the steps' rows to the opens' width wastes at most ``MERGE_WASTE`` row-tokens; returns the new
    session.

    An open also brings its search's cached response up to date with the tokens committed since (``pending``),
    in the same forward: a commit costs no forward of its own."""
    answers: dict[int, torch.Tensor] = {}
    groups: list[tuple[Rows, list[list[int]], dict[int, int]]] = []  # (rows, tokens per row, also_after)
    new_owned: dict[int, list[int]] = {}
    width = 0
    if steps:
        order = list(steps)
        parents = [owned[i][p] for i in order for p, _ in steps[i].keys]
        kept = session if parents == list(range(session.n)) else ragged.take(session, parents)
        groups.append((kept, [[t] for i in order for _, t in steps[i].keys], {}))
        for i in order:
            k = len(steps[i].keys)
            new_owned[i] = list(range(width, width + k))
            width += k
    open_order = list(opens)
    start: dict[int, int] = {}  # per open: how many of its tokens went in as kept keys/values (not fed)
    if opens:
        # committed tokens not yet in a search's cached response go first (and then the whole path: kept parts
        # cannot go in front of them); the response is then cut from the row
        lead = {j: len(pending.get(i, [])) for j, i in enumerate(open_order) if pending.get(i)}
        bases, feeds = [], []
        for i in open_order:
            o = opens[i]
            start[i] = 0 if pending.get(i) else sum(p.n for p in o.parts)
            if o.tokens and start[i] >= len(o.tokens):
                raise HindsightError("An open must leave at least its last token to feed.")
            bases.append(ragged.extend(roots[i], o.parts) if start[i] else roots[i])
            feeds.append(pending.get(i, []) + o.tokens[start[i]:])
        groups.append((ragged.join(bases), feeds, lead))
        for j, i in enumerate(open_order):
            new_owned[i] = [width + j]
        width += len(open_order)
    if not groups:
        return None, {}, answers
    toks = [t for _, ts, _ in groups for t in ts]
    waste = len(toks) * max(len(t) for t in toks) - sum(len(t) for t in toks)
    if len(groups) > 1 and waste <= MERGE_WASTE:
        at = groups[0][0].n
        groups = [(ragged.join([g[0] for g in groups]), toks, {at + j: k for j, k in groups[1][2].items()})]
    done = [ragged.append(lm, rows, ts, also_after=after) for rows, ts, after in groups]
    new = ragged.join(done) if len(done) > 1 else done[0]
    if opens:
        src = done[-1]
        base = src.n - len(open_order)  # the opens are the last rows of the last forward
        for j, i in enumerate(open_order):
            fed = ragged.columns(src, base + j, len(opens[i].tokens) - start[i])
            answers[i] = Opened(src.logprobs[base + j: base + j + 1], fed, start[i])
            if not pending.get(i):
                continue
            row = ragged.take(src, [base + j]) if src.n > 1 else src
            roots[i] = ragged.truncate(row, int(roots[i].lengths()[0]) + len(pending[i]), src.extra[base + j])
            pending.pop(i)
    for i, rows in new_owned.items():
        answers.setdefault(i, new.logprobs[rows])
    return new, new_owned, answers


@dataclass
class Spent:
    """What a search cost: forwards, fed tokens and seconds (a shared round's split evenly among its searches)."""

    forward_passes: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0

    def add(self, other: Spent, share: float = 1.0) -> None:
        self.forward_passes += other.forward_passes * share
        self.tokens += other.tokens * share
        self.seconds += other.seconds * share


def _since(lm: LanguageModel, before: Any, t0: float) -> Spent:
    d = lm.counters.since(before)
    return Spent(d.forward_passes, d.tokens, time.perf_counter() - t0)


def stream_searches(lm: LanguageModel, source: Iterable[tuple[list[int], str, Search]], width: int,
                    judge_many: JudgeMany, embed: EmbedFn) -> Iterator[tuple[int, Any, Spent]]:
    """Drive the searches ``source`` gives ((prompt ids, prompt, search) each), at most ``width`` at a time,
    batching their requests; yields (index in ``source``, result, cost) as each search finishes.

    A finished search's place goes to the next one at once, so one long search does not hold a whole batch of
    finished ones back (an evaluation over many prompts keeps ``width`` searches in every forward). Each
    search's result is what it gets alone; its cost is its prompt's prefill plus an even share of every batched
    call (a decoding forward, an evaluator or embedder call) that answered it.
    """
    if width < 1:
        raise HindsightError(f"The number of searches run together must be at least 1 (got {width}).")
    source = iter(source)
    roots: dict[int, Rows] = {}
    prompts: dict[int, str] = {}
    live: dict[int, Search] = {}
    pending: dict[int, Request] = {}
    spent: dict[int, Spent] = {}
    finished: list[tuple[int, Any]] = []
    count = 0

    def advance(i: int, answer: Any, first: bool = False) -> None:
        try:
            pending[i] = next(live[i]) if first else live[i].send(answer)
        except StopIteration as stop:
            pending.pop(i, None)
            finished.append((i, stop.value))

    def admit() -> None:
        nonlocal count
        while len(live) < width:
            nxt = next(source, None)
            if nxt is None:
                return
            ids, prompt, search = nxt
            i, count = count, count + 1
            before, t0 = lm.counters.snapshot(), time.perf_counter()
            roots[i], prompts[i], live[i] = ragged.from_state(lm.start(ids, 1)), prompt, search
            advance(i, None, first=True)
            spent[i] = _since(lm, before, t0)

    def share(answered: Iterable[int], before: Any, t0: float) -> None:
        answered, cost = list(answered), _since(lm, before, t0)
        for i in answered:
            spent[i].add(cost, 1 / len(answered))

    session: Rows | None = None
    owned: dict[int, list[int]] = {}
    pending_commits: dict[int, list[int]] = {}
    admit()
    while pending or finished:
        # first everything that needs no forward (evaluations, embeddings, commits), each kind in one call, until
        # every search waits for a decoding: a search that judges does not sit out the next forward, and a
        # finished search's place is taken before it
        while True:
            done, finished[:] = list(finished), []
            for i, result in done:
                for table in (roots, prompts, live, pending_commits, owned):
                    table.pop(i, None)
                yield i, result, spent.pop(i)
            admit()
            kinds = _by_kind(pending)
            if not (kinds[Judge] or kinds[Embed] or kinds[Commit] or kinds[Keep]):
                break
            before, t0 = lm.counters.snapshot(), time.perf_counter()
            answers = _answer_offline(kinds, prompts, judge_many, embed, pending_commits, roots, session, owned)
            share(answers, before, t0)
            for i, answer in answers.items():
                advance(i, answer)
        if not pending:
            break
        before, t0 = lm.counters.snapshot(), time.perf_counter()
        session, owned, decoded = _decode_round(lm, session, owned, roots, pending_commits, kinds[Open], kinds[Step])
        share(decoded, before, t0)
        for i, answer in decoded.items():
            advance(i, answer)


def run_searches(lm: LanguageModel, prompt_ids: Sequence[list[int]], prompts: Sequence[str],
                 searches: Sequence[Search], judge_many: JudgeMany, embed: EmbedFn) -> list[Any]:
    """Drive ``searches`` (one per prompt) to completion, all together; returns their results in order."""
    done = stream_searches(lm, zip(prompt_ids, prompts, searches), max(1, len(searches)), judge_many, embed)
    return [result for _, result, _ in sorted(done, key=lambda x: x[0])]


def _by_kind(pending: dict[int, Request]) -> dict[type, dict[int, Any]]:
    kinds: dict[type, dict[int, Any]] = {k: {} for k in (Open, Step, Judge, Embed, Commit, Keep)}
    for i, req in pending.items():
        kinds[type(req)][i] = req
    return kinds


def _answer_offline(kinds: dict[type, dict[int, Any]], prompts: Sequence[str], judge_many: JudgeMany,
                    embed: EmbedFn, pending_commits: dict[int, list[int]], roots: list[Rows],
                    session: Rows | None, owned: dict[int, list[int]]) -> dict[int, Any]:
    """Answers to the requests that need no decoding forward: one evaluator call, one embedder call, kept
    keys/values copied out of the current decoding, commits."""
    answers: dict[int, Any] = {}
    if kinds[Judge]:
        order = list(kinds[Judge])
        vals = judge_many([(prompts[i], kinds[Judge][i].texts) for i in order])
        answers.update(zip(order, vals))
    if kinds[Embed]:
        order = list(kinds[Embed])
        texts = [t for i in order for t in kinds[Embed][i].texts]
        embs = embed(texts)
        at = 0
        for i in order:
            k = len(kinds[Embed][i].texts)
            answers[i] = None if embs is None else embs[at: at + k]
            at += k
    for i, k in kinds[Keep].items():
        answers[i] = [ragged.columns(session, owned[i][row], count) for row, count in k.rows]
    for i, c in kinds[Commit].items():
        if c.kv is not None and c.kv.after is not None and c.kv.n == len(c.tokens) and not pending_commits.get(i):
            roots[i] = ragged.extend(roots[i], [c.kv])
        else:  # applied by the search's next open (see _decode_round)
            pending_commits.setdefault(i, []).extend(c.tokens)
        answers[i] = None
    return answers
