"""RAIN: rewindable auto-regressive inference (Li et al., ICLR 2024) — search, judge yourself, rewind, commit.

The response grows by committed token sets. Before each commit an inner search runs from the current node; one
iteration (as in the authors' reference code) is:

1. **select** a leaf by PUCT (:mod:`hindsight.samplers.rain_tree`), descending through token-set nodes (a node
   whose children are all poor and alike first gets more children: dynamic addition);
2. **roll out** once from the leaf: sample until the text ends a clause (``, . ? : ;`` newline), EOS or
   ``rollout_max`` tokens, and **evaluate** that one text (self-evaluation by default, any potential otherwise);
3. **expand** the leaf with ``candidates`` token sets (one greedy, the rest top-k sampled; at set size 1 simply
   the most likely tokens) *without* rollouts: the new children start unvisited (``n = 0``);
4. **back up** the value as a running mean up to the current node, sharing a fraction with near-duplicate
   siblings (cosine of MiniLM embeddings of each node's text + first rollout).

The outer loop stops the inner search once the most visited child has more than ``min_visits`` visits and a
value above ``value_threshold`` (or the visit budget is spent), commits that child, keeps its subtree and its
statistics, and goes on until EOS or the token budget.

Costs: the prompt is prefilled once; the committed response is one cached row, extended at a commit with the
committed node's kept keys/values (a commit costs no forward of its own); an iteration is one forward that feeds
the selected leaf's last token (the rest of its path was kept when its set was decoded), then one decoding loop
whose rows are the candidate sets and the single rollout (the candidate rows stop after the set length, the
rollout row goes on alone), and one evaluator call with one text (after the evaluator's cached few-shot prefix,
prompt and committed response).

Batching: a search is a generator of requests (:mod:`hindsight.samplers.rain_batch`), so ``run_many`` advances
many prompts' searches together and shares every forward, evaluation and embedding call among them, and
``stream`` keeps a fixed number of searches going over a long list of prompts (a finished search's place goes
to the next prompt at once); each prompt gets exactly the answer, iterations and tree it gets alone with the
same seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.lm.base import LanguageModel
from hindsight.lm.sampling import sample_from_logprobs, sample_top_k
from hindsight.potentials.self_eval import Evaluator
from hindsight.samplers.rain_batch import (Commit, Embed, Judge, Keep, Open, Opened, Request, Step, run_searches,
                                           stream_searches)
from hindsight.samplers.rain_tree import MinMax, Node, backup, best_child, mean_pairwise_cosine, select_child

EmbedFn = Callable[[Sequence[str]], torch.Tensor]

MIN_VISITS = {"harmless": 6, "truthful": 16}
KEEP_BYTES = 256 << 20  # keys/values a search keeps for its tree's nodes, at most (beyond it, opens re-feed)


@dataclass
class RainConfig:
    """The published defaults (HH); ``for_task('truthful')`` raises ``min_visits`` to 16."""

    max_tokens: int = 48
    set_sizes: tuple[int, ...] = (1, 2, 4, 10)  # token-set length by depth; the last repeats
    candidates: int = 10  # token sets proposed per expansion (one greedy, the rest sampled)
    top_k: int = 15
    c_puct: float = 2.0
    root_prior_weight: float = 0.75  # root priors: 0.75 model + 0.25 uniform
    clause_ends: str = ",.?:;\n"
    rollout_max: int = 24  # rollout tokens after a set, at most, before it is judged anyway
    max_iters: int = 50  # visits of the current node to reach before committing ...
    extra_iters: int = 15  # ... but always at least this many new ones (never more than max_iters)
    min_visits: int = 6
    value_threshold: float = 0.8
    sim_threshold: float = 0.95
    sim_weight: float = 0.2
    max_children: int = 20
    alike_threshold: float = 0.9  # mean pairwise cosine above which siblings count as "too alike"
    seed: int | None = None

    @classmethod
    def for_task(cls, task: str, **overrides: Any) -> RainConfig:
        if task not in MIN_VISITS:
            raise HindsightError(f"Unknown RAIN task {task!r}; choose one of {', '.join(MIN_VISITS)}.")
        cfg = cls(min_visits=MIN_VISITS[task])
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    def check(self) -> None:
        if self.max_tokens < 1:
            raise HindsightError(f"--max-tokens must be at least 1 (got {self.max_tokens}).")
        if self.max_iters < 1:
            raise HindsightError(f"--max-iters must be at least 1 (got {self.max_iters}).")
        if self.candidates < 1 or self.max_children < self.candidates:
            raise HindsightError("RAIN needs 1 <= candidates <= max_children.")
        if not self.set_sizes or min(self.set_sizes) < 1:
            raise HindsightError("Token-set sizes must be positive.")
        if self.min_visits < 0:
            raise HindsightError(f"--min-visits must be non-negative (got {self.min_visits}).")


@dataclass
class RainResult:
    """The committed response, what the search did, and what it cost."""

    prompt: str
    text: str
    tokens: list[int]
    finish_reason: str  # "eos" or "length"
    value: float  # the evaluator's value of the final text
    iterations: int  # inner search iterations over all commits
    steps: list[dict[str, Any]]  # per commit: text, iterations, visits, value
    forward_passes: float
    tokens_computed: float
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    tree: Node | None = field(default=None, repr=False)
    committed: set[int] = field(default_factory=set, repr=False)
    batch: int = 1  # searches run together, at most (its costs: a share of each batched call that served it)

    def as_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "tokens": self.tokens, "finish_reason": self.finish_reason,
                "value": self.value, "iterations": self.iterations, "steps": self.steps,
                "forward_passes": self.forward_passes, "tokens_computed": self.tokens_computed,
                "seconds": round(self.seconds, 3), "config": self.config}

    def tree_json(self) -> dict[str, Any]:
        """The whole search tree (every node ever expanded), with the committed path marked."""
        if self.tree is None:
            raise HindsightError("This result has no search tree.")
        return {"prompt": self.prompt, "text": self.text, "steps": self.steps, "root": self.tree.to_json(self.committed)}


@dataclass
class _Search:
    """One prompt's search in progress: its tree, current node, random generator and value range."""

    prompt: str
    gen: torch.Generator
    tree: Node = field(default_factory=lambda: Node(tokens=[]))
    minmax: MinMax = field(default_factory=MinMax)
    kept_bytes: int = 0

    def __post_init__(self) -> None:
        self.root = self.tree  # the current node: the committed response so far


class Rain:
    """RAIN over one model and one evaluator; ``run(prompt)`` or ``run_many(prompts)`` (batched)."""

    def __init__(self, lm: LanguageModel, evaluator: Evaluator, config: RainConfig | None = None, *,
                 embed: EmbedFn | None = None, use_chat: bool = True) -> None:
        self.lm, self.evaluator = lm, evaluator
        self.cfg = config or RainConfig()
        self.cfg.check()
        self.use_chat = use_chat
        self._embed = embed
        self._embed_tried = embed is not None
        self._clause_end: dict[int, bool] = {}

    # ---- helpers -------------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> torch.Tensor | None:
        """Embeddings for similarity sharing and dynamic addition; None when they are off or unavailable."""
        if not self._embeddings_on():
            return None
        if not self._embed_tried:
            self._embed_tried = True
            from hindsight.lm.embed import embeddings_available, get_embedder

            self._embed = get_embedder().embed if embeddings_available() else None
        return self._embed(list(texts)) if self._embed is not None else None

    def _embeddings_on(self) -> bool:
        return self.cfg.sim_weight > 0 or self.cfg.max_children > self.cfg.candidates

    def _ends_clause(self, tok: int) -> bool:
        """Whether the text ends a clause after this token (its last character is a clause end)."""
        if tok not in self._clause_end:
            s = self.lm.decode([tok])
            self._clause_end[tok] = bool(s) and s[-1] in self.cfg.clause_ends
        return self._clause_end[tok]

    def set_size(self, depth: int) -> int:
        sizes = self.cfg.set_sizes
        return sizes[min(depth, len(sizes) - 1)]

    # ---- the search ----------------------------------------------------------------------------------------
    def run(self, prompt: str) -> RainResult:
        """One search (a batch of one)."""
        return self.run_many([prompt])[0]

    def run_many(self, prompts: Sequence[str]) -> list[RainResult]:
        """One search per prompt, all advanced together so that their forwards are shared.

        Each result (text, iterations, tree) is what ``run`` gives for that prompt alone with the same seed.
        """
        ids = [self._prompt_ids(p) for p in prompts]  # every prompt checked before any work
        done = self._stream(zip(ids, prompts), max(1, len(prompts)))
        return [res for _, res in sorted(done, key=lambda x: x[0])]

    def stream(self, prompts: Iterable[str], width: int) -> Iterator[tuple[int, RainResult]]:
        """Searches for ``prompts``, at most ``width`` at a time, as a stream: yields (index, result) as each
        finishes, and a finished search's place goes to the next prompt at once (an evaluation over many prompts
        keeps ``width`` searches in every forward instead of waiting for a batch's slowest).

        Each result is what ``run`` gives for that prompt alone with the same seed. Its costs (forward passes,
        tokens, seconds) are its prompt's prefill plus an even share of every batched call that answered it.
        A prompt is read (and checked) only when its search starts.
        """
        return self._stream(((self._prompt_ids(p), p) for p in prompts), width)

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.lm.prompt_ids(prompt, use_chat=self.use_chat)
        self.lm.check_length(len(ids), self.cfg.max_tokens + self.cfg.rollout_max)
        return ids

    def _stream(self, prompts: Iterable[tuple[list[int], str]], width: int) -> Iterator[tuple[int, RainResult]]:
        source = ((ids, p, self._search(self.begin(p))) for ids, p in prompts)
        for i, res, cost in stream_searches(self.lm, source, width, self.evaluator.values_many, self.embed):
            res.forward_passes, res.tokens_computed, res.seconds = cost.forward_passes, cost.tokens, cost.seconds
            res.batch = width
            yield i, res

    def begin(self, prompt: str) -> _Search:
        """A new search for ``prompt`` (seeded from the config); drive it with ``_search`` or ``iterate``."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.cfg.seed if self.cfg.seed is not None else int(time.time_ns() % (2**31)))
        self.evaluator.hint_prefix(prompt, "")
        return _Search(prompt=prompt, gen=gen)

    def _search(self, s: _Search) -> Generator[Request, Any, RainResult]:
        """The outer loop for one prompt: search the current node, commit its best child, until EOS or budget."""
        cfg, lm = self.cfg, self.lm
        committed = {id(s.tree)}
        steps: list[dict[str, Any]] = []
        total = 0
        while not s.root.terminal:
            root = s.root
            target = max(cfg.max_iters, root.n + min(cfg.extra_iters, cfg.max_iters))
            iters = 0
            while root.n < target:
                yield from self._iterate(s)
                iters += 1
                b = best_child(root)
                if b.n > cfg.min_visits and b.q > cfg.value_threshold:
                    break
            total += iters
            child = best_child(root)
            steps.append({"text": child.text, "iterations": iters, "visits": round(child.n, 3),
                          "value": round(child.q, 4)})
            committed.add(id(child))
            if not child.terminal:
                yield Commit(child.tokens, child.kv)
                self.evaluator.hint_prefix(s.prompt, lm.decode(child.path_tokens()))
            self._let_go(s, root, child)
            s.root = child
        tokens = s.root.path_tokens()
        text = lm.decode(tokens)
        value = float((yield Judge([text]))[0])
        eos = bool(tokens) and tokens[-1] in lm.eos_token_ids
        return RainResult(prompt=s.prompt, text=text, tokens=tokens, finish_reason="eos" if eos else "length",
                          value=value, iterations=total, steps=steps, forward_passes=0, tokens_computed=0,
                          seconds=0.0, config=asdict(cfg), tree=s.tree, committed=committed)

    def iterate(self, s: _Search) -> None:
        """Run one inner iteration of search ``s`` on its own (for tests and step-by-step use)."""
        run_searches(self.lm, [self.lm.prompt_ids(s.prompt, use_chat=self.use_chat)], [s.prompt],
                     [self._iterate(s)], self.evaluator.values_many, self.embed)

    def _iterate(self, s: _Search) -> Generator[Request, Any, None]:
        """One inner iteration: select a leaf, roll out once and evaluate, expand without rollouts, back up."""
        cfg, lm, root = self.cfg, self.lm, s.root
        node = root
        while node.children and not node.terminal:
            if self._needs_more(node):
                yield from self._expand(s, node, rollout=False)
            node = select_child(node, s.minmax, cfg.c_puct, cfg.root_prior_weight if node is root else 1.0)
        path = node.path_tokens()
        if node.terminal:
            value = float((yield Judge([lm.decode(path)]))[0])
        else:
            rollout = yield from self._expand(s, node, rollout=True)
            value = float((yield Judge([lm.decode(path + rollout)]))[0])
            if node is not root and not node.rollout_text:
                node.rollout_text = lm.decode(node.tokens + rollout)
        if node.embedding is None and node is not root and node.n == 0 and self._embeddings_on():
            embs = yield Embed([node.rollout_text or node.text])
            node.embedding = embs[0] if embs is not None else None
        backup(node, value, s.minmax, stop=root, sim_threshold=cfg.sim_threshold, sim_weight=cfg.sim_weight)

    def _let_go(self, s: _Search, root: Node, child: Node) -> None:
        """After committing ``child``: drop the keys/values kept for nodes that can no longer be opened."""
        keep: set[int] = set()
        stack = list(child.children)
        while stack:
            nd = stack.pop()
            keep.add(id(nd))
            stack.extend(nd.children)
        stack = [root]
        while stack:
            nd = stack.pop()
            if id(nd) not in keep and nd.kv is not None:
                s.kept_bytes -= nd.kv.nbytes
                nd.kv = None
            stack.extend(c for c in nd.children if id(c) not in keep)

    def _keep(self, s: _Search, node: Node, kv: Any) -> None:
        """Keep ``kv`` (keys/values of the node's first tokens) for a later open, within the search's budget."""
        old = node.kv.nbytes if node.kv is not None else 0
        size = kv.nbytes
        if s.kept_bytes - old + size > KEEP_BYTES:
            return
        s.kept_bytes += size - old
        node.kv = kv

    def _open(self, s: _Search, node: Node) -> Generator[Request, Any, torch.Tensor]:
        """Start a decoding after ``node``: its path's kept keys/values go in as they are, the rest is fed (at
        least the node's last token, whose next-token distribution is the answer); what was fed is kept."""
        nodes: list[Node] = []
        nd = node
        while nd is not s.root and nd is not None:
            nodes.append(nd)
            nd = nd.parent
        nodes.reverse()
        parts = []
        for nd in nodes:
            have = nd.kv.n if nd.kv is not None else 0
            use = min(have, len(nd.tokens) - 1) if nd is node else have
            if use:
                parts.append(nd.kv if use == have else nd.kv.slice(0, use))
            if use < len(nd.tokens):
                break
        opened: Opened = yield Open(node.path_tokens(stop=s.root), parts)
        a = 0
        for nd in nodes:  # what was fed completes the nodes' kept keys/values
            b = a + len(nd.tokens)
            have = nd.kv.n if nd.kv is not None else 0
            if have < b - a and b > opened.start:
                if opened.start <= a:
                    self._keep(s, nd, opened.fed.slice(a - opened.start, b - opened.start))
                elif have >= opened.start - a:
                    self._keep(s, nd, nd.kv.slice(0, opened.start - a).then(opened.fed.slice(0, b - opened.start)))
            a = b
        if node is not s.root and node.kv is not None and node.kv.n == len(node.tokens):
            self._keep(s, node, replace(node.kv, after=opened.logp[0]))  # a commit of it then costs nothing
        return opened.logp

    def _needs_more(self, node: Node) -> bool:
        """Dynamic addition: every child is poor and they are too alike (or all one), and there is room for more."""
        kids = node.children
        return (len(kids) < self.cfg.max_children and max(ch.q for ch in kids) < 0
                and (len(kids) == 1 or mean_pairwise_cosine(kids) > self.cfg.alike_threshold))

    def _expand(self, s: _Search, node: Node, *, rollout: bool) -> Generator[Request, Any, list[int]]:
        """Add up to ``candidates`` unvisited children to ``node`` and, with ``rollout``, sample one rollout from
        ``node`` in the same decoding; return the rollout's tokens."""
        cfg, lm = self.cfg, self.lm
        path = node.path_tokens()
        k = min(self.set_size(node.depth), cfg.max_tokens - len(path))
        m = min(cfg.candidates, cfg.max_children - len(node.children))
        seen = {tuple(ch.tokens) for ch in node.children}
        if cfg.rollout_max < 1 or (path and self._ends_clause(path[-1])):
            rollout = False  # no rollouts, or the text already ends a clause: judge it as it is
        logp = yield from self._open(s, node)
        sets: list[tuple[list[int], float, Any]] = []
        if k == 1 and m > 0:  # single tokens: the most likely ones not yet children (no decoding needed)
            lp0 = logp[0].float().cpu()
            top = torch.topk(lp0, min(lp0.shape[0], m + len(seen)))
            for lp, tok in zip(top.values.tolist(), top.indices.tolist()):
                if (tok,) not in seen and len(sets) < m and lp > -math.inf:
                    sets.append(([tok], lp, None))
            m = 0
        seqs, set_lp, set_kv = yield from self._decode(s, logp, m, k, rollout)
        for seq, lp, kv in zip(seqs[:m], set_lp, set_kv):
            sets.append((seq, lp, kv))
        out = seqs[m] if rollout else []
        for toks, lp, kv in sets:
            if tuple(toks) in seen:
                continue
            seen.add(tuple(toks))
            eos = toks[-1] in lm.eos_token_ids
            child = Node(tokens=toks, prior=math.exp(lp), parent=node, depth=node.depth + 1, text=lm.decode(toks),
                         terminal=eos or len(path) + len(toks) >= cfg.max_tokens)
            if kv is not None and not child.terminal:
                self._keep(s, child, kv)
            node.children.append(child)
        return out

    def _decode(self, s: _Search, logp: torch.Tensor, m: int, k: int,
                rollout: bool) -> Generator[Request, Any, tuple[list[list[int]], list[float], list[Any]]]:
        """Decode ``m`` candidate rows (a ``k``-token set each: row 0 greedy, the others top-k sampled) and, with
        ``rollout``, one more row sampled from the full distribution until a clause ends, EOS or ``rollout_max``.

        All rows start from the one row whose next-token log-probs are ``logp`` (``[1, V]``). Returns each row's
        tokens (a set stops early at EOS) and each set's log-probability under the model. Rows with the same
        tokens so far share one decoding row (their next-token distribution is the same), so a forward only
        computes distinct prefixes; finished rows and the last token of a row are never fed. The keys/values of a
        finished set's fed tokens are copied out (:class:`Keep`) and returned, so that an open of its node later
        feeds only its last token.
        """
        cfg, lm = self.cfg, self.lm
        r_max = cfg.rollout_max if rollout else 0
        n = m + int(rollout)  # rows: candidates first, then the rollout
        seqs: list[list[int]] = [[] for _ in range(n)]
        cand_lp = [0.0] * m
        cand_kv: list[Any] = [None] * m
        owner: list[int | None] = [0] * n  # the decoding row holding each row's prefix (None: finished)
        for t in range(max(k if m else 0, r_max)):
            done: list[tuple[int, int]] = []  # (candidate, its decoding row) of the sets finished this step
            if m and t < k:
                live = [i for i in range(m) if owner[i] is not None]
                idx = torch.tensor([owner[i] if owner[i] is not None else 0 for i in range(m)])
                lp_rows = logp[idx.to(logp.device)]
                c = torch.empty(m, dtype=torch.long)
                c[0] = int(lp_rows[0].argmax())
                if m > 1:
                    c[1:] = sample_top_k(lp_rows[1:], cfg.top_k, generator=s.gen).cpu()
                chosen = lp_rows.gather(1, c[:, None].to(logp.device)).squeeze(1).double().cpu().tolist()
                for i, tok in zip(live, c[live].tolist()):
                    seqs[i].append(tok)
                    cand_lp[i] += chosen[i]
                    if t + 1 >= k or tok in lm.eos_token_ids:
                        if t > 0 and tok not in lm.eos_token_ids:
                            done.append((i, owner[i]))
                        owner[i] = None
            if done:  # the rows still hold their first t tokens' keys/values: copy them out before the next step
                kept = yield Keep([(row, t) for _, row in done])
                for (i, _), kv in zip(done, kept):
                    cand_kv[i] = kv
            if rollout and owner[-1] is not None:
                tok = int(sample_from_logprobs(logp[owner[-1]][None], generator=s.gen)[0])
                seqs[-1].append(tok)
                if len(seqs[-1]) >= r_max or self._roll_ended(tok):
                    owner[-1] = None
            # the rows that go on: one decoding row per distinct (parent row, token)
            keys: dict[tuple[int, int], int] = {}
            for i in range(n):
                if owner[i] is not None:
                    owner[i] = keys.setdefault((owner[i], seqs[i][-1]), len(keys))
            if not keys:
                break
            logp = yield Step(list(keys))
        return seqs, cand_lp, cand_kv

    def _roll_ended(self, tok: int) -> bool:
        return tok in self.lm.eos_token_ids or self._ends_clause(tok)


def rain(lm: LanguageModel, prompt: str | Sequence[str], evaluator: Evaluator, config: RainConfig | None = None,
         *, embed: EmbedFn | None = None, use_chat: bool = True) -> RainResult | list[RainResult]:
    """Run RAIN on one prompt, or on a list of prompts batched together (see :class:`Rain`)."""
    search = Rain(lm, evaluator, config, embed=embed, use_chat=use_chat)
    return search.run(prompt) if isinstance(prompt, str) else search.run_many(prompt)
