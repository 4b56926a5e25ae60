"""RAIN: rewindable auto-regressive inference (Li et al., ICLR 2024) — search, judge yourself, rewind, commit.

The response grows by committed token sets. Before each commit an inner search runs from the current node:

1. **select** a leaf by PUCT (:mod:`hindsight.samplers.rain_tree`), descending through token-set nodes;
2. **expand** it: ``candidates`` token sets (row 0 greedy, the rest top-k sampled) are decoded together in one
   batch from the leaf's KV state; each row keeps going past its set until the text ends a clause (or EOS, or
   ``rollout_max`` tokens) so every new child comes with its own rollout;
3. **evaluate** all rollouts in one batched call to the evaluator (self-evaluation by default, any potential
   otherwise) — each child starts with that value;
4. **back up** the leaf's new estimate (the prior-weighted mean of its children's values) as a running mean
   up to the current node, sharing a fraction with near-duplicate siblings (cosine of MiniLM embeddings).

When a node's children are all poor (``q < 0``) and alike, selection stops there and adds more children
(up to ``max_children``). The outer loop stops the inner search once the most visited child has more than
``min_visits`` visits and a value above ``value_threshold`` (or the visit budget is spent), commits that child,
keeps its subtree and its statistics, and goes on until EOS or the token budget.

Costs: the prompt is prefilled once; the committed path is one cached row extended by each committed set; an
expansion is one ``extend`` of the path below the current node plus one batched decoding loop; the evaluator
sees every rollout of an expansion in one forward (both option orders, after its cached few-shot prefix).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.lm.base import DecodeState, LanguageModel
from hindsight.lm.sampling import sample_from_logprobs, warp
from hindsight.potentials.self_eval import Evaluator
from hindsight.samplers.rain_tree import MinMax, Node, backup, best_child, mean_pairwise_cosine, select_child

EmbedFn = Callable[[Sequence[str]], torch.Tensor]

MIN_VISITS = {"harmless": 6, "truthful": 16}


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
    forward_passes: int
    tokens_computed: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    tree: Node | None = field(default=None, repr=False)
    committed: set[int] = field(default_factory=set, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "tokens": self.tokens, "finish_reason": self.finish_reason,
                "value": self.value, "iterations": self.iterations, "steps": self.steps,
                "forward_passes": self.forward_passes, "tokens_computed": self.tokens_computed,
                "seconds": round(self.seconds, 3), "config": self.config}

    def tree_json(self) -> dict[str, Any]:
        """The whole search tree (every node ever expanded), with the committed path marked."""
        if self.tree is None:
            raise HindsightError("This result has no search tree.")
        return {"prompt": self.prompt, "text": self.text, "root": self.tree.to_json(self.committed)}


class Rain:
    """RAIN over one model and one evaluator; ``run(prompt)`` returns a :class:`RainResult`."""

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
    def embed(self, texts: list[str]) -> torch.Tensor | None:
        """Embeddings for similarity sharing and dynamic addition; None when they are off or unavailable."""
        if self.cfg.sim_weight <= 0 and self.cfg.max_children <= self.cfg.candidates:
            return None
        if not self._embed_tried:
            self._embed_tried = True
            from hindsight.lm.embed import embeddings_available, get_embedder

            self._embed = get_embedder().embed if embeddings_available() else None
        return self._embed(texts) if self._embed is not None else None

    def _ends_clause(self, tok: int) -> bool:
        if tok not in self._clause_end:
            self._clause_end[tok] = any(ch in self.cfg.clause_ends for ch in self.lm.decode([tok]))
        return self._clause_end[tok]

    def set_size(self, depth: int) -> int:
        sizes = self.cfg.set_sizes
        return sizes[min(depth, len(sizes) - 1)]

    # ---- the search ----------------------------------------------------------------------------------------
    def run(self, prompt: str) -> RainResult:
        cfg, lm = self.cfg, self.lm
        t0 = time.perf_counter()
        before = lm.counters.snapshot()
        ids = lm.prompt_ids(prompt, use_chat=self.use_chat)
        lm.check_length(len(ids), cfg.max_tokens + cfg.rollout_max)
        self._prompt = prompt
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(cfg.seed if cfg.seed is not None else int(time.time_ns() % (2**31)))
        self._minmax = MinMax()
        tree = Node(tokens=[])
        root, root_state = tree, lm.start(ids, 1)
        committed = {id(tree)}
        steps: list[dict[str, Any]] = []
        total = 0
        while not root.terminal:
            target = max(cfg.max_iters, root.n + min(cfg.extra_iters, cfg.max_iters))
            iters = 0
            while root.n < target:
                self._iterate(root, root_state)
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
                lm.extend(root_state, torch.tensor([child.tokens], device=lm.device))
            root = child
        tokens = root.path_tokens()
        text = lm.decode(tokens)
        value = float(self.evaluator.values(prompt, [text])[0])
        spent = lm.counters.since(before)
        eos = bool(tokens) and tokens[-1] in lm.eos_token_ids
        return RainResult(prompt=prompt, text=text, tokens=tokens, finish_reason="eos" if eos else "length",
                          value=value, iterations=total, steps=steps, forward_passes=spent.forward_passes,
                          tokens_computed=spent.tokens, seconds=time.perf_counter() - t0, config=asdict(cfg),
                          tree=tree, committed=committed)

    def _iterate(self, root: Node, root_state: DecodeState) -> None:
        """One inner iteration: select a leaf, expand and evaluate it (or re-read a terminal one), back up."""
        cfg, node = self.cfg, root
        while node.children and not node.terminal and not self._needs_more(node):
            node = select_child(node, self._minmax, cfg.c_puct, cfg.root_prior_weight if node is root else 1.0)
        value = node.q if node.terminal else self._expand(node, root, root_state)
        backup(node, value, self._minmax, stop=root, sim_threshold=cfg.sim_threshold, sim_weight=cfg.sim_weight)

    def _needs_more(self, node: Node) -> bool:
        """Dynamic addition: every child is poor and they are too alike (or all one), and there is room for more."""
        kids = node.children
        return (len(kids) < self.cfg.max_children and max(ch.q for ch in kids) < 0
                and (len(kids) == 1 or mean_pairwise_cosine(kids) > self.cfg.alike_threshold))

    def _expand(self, node: Node, root: Node, root_state: DecodeState) -> float:
        """Add up to ``candidates`` children with rollouts and values; return the leaf's new value estimate."""
        cfg, lm = self.cfg, self.lm
        path = node.path_tokens()
        k = min(self.set_size(node.depth), cfg.max_tokens - len(path))
        m = min(cfg.candidates, cfg.max_children - len(node.children))
        state = lm.select(root_state, [0])
        below = node.path_tokens(stop=root)
        if below:
            lm.extend(state, torch.tensor([below], device=lm.device))
        rows = lm.select(state, [0] * m)
        seqs, set_lp, set_len = self._decode(rows, m, k)
        new: list[Node] = []
        full: list[list[int]] = []  # set + rollout, what each new child is judged on
        seen = {tuple(ch.tokens) for ch in node.children}
        for seq, lp, n_set in zip(seqs, set_lp, set_len):
            toks = seq[:n_set]
            if tuple(toks) in seen:
                continue
            seen.add(tuple(toks))
            eos = toks[-1] in lm.eos_token_ids
            new.append(Node(tokens=toks, prior=float(torch.tensor(lp).exp()), parent=node, depth=node.depth + 1,
                            text=lm.decode(toks), rollout_text=lm.decode(seq),
                            terminal=eos or len(path) + len(toks) >= cfg.max_tokens))
            full.append(seq)
        if not new:  # every candidate repeated an existing child: re-read the leaf's estimate
            return node.q if node.n > 0 else 0.0
        texts = [lm.decode(path + seq) for seq in full]
        values = self.evaluator.values(self._prompt, texts)
        embs = self.embed([ch.rollout_text for ch in new])
        for i, ch in enumerate(new):
            ch.n, ch.w = 1.0, float(values[i])
            ch.embedding = embs[i] if embs is not None else None
            self._minmax.update(ch.q)
        node.children.extend(new)
        priors = torch.tensor([ch.prior for ch in new], dtype=torch.float64)
        priors = priors / priors.sum() if float(priors.sum()) > 0 else torch.full_like(priors, 1 / len(new))
        return float((priors * values).sum())

    def _decode(self, rows: DecodeState, m: int, k: int) -> tuple[list[list[int]], list[float], list[int]]:
        """Decode ``m`` rows together: a ``k``-token set (row 0 greedy, others top-k), then a rollout each.

        Returns each row's tokens (set + rollout), the set's log-probability under the model, and set length.
        """
        cfg, lm = self.cfg, self.lm
        seqs: list[list[int]] = [[] for _ in range(m)]
        set_lp = [0.0] * m
        set_len = [k] * m
        finished = [False] * m
        for t in range(k + cfg.rollout_max):
            logp = rows.logprobs
            choice = torch.empty(m, dtype=torch.long)
            choice[0] = int(logp[0].argmax())
            if m > 1:
                choice[1:] = sample_from_logprobs(warp(logp[1:], top_k=cfg.top_k), generator=self._gen).cpu()
            chosen_lp = logp.gather(1, choice[:, None].to(logp.device)).squeeze(1).double().cpu()
            for i in range(m):
                if finished[i]:
                    continue
                tok = int(choice[i])
                seqs[i].append(tok)
                if t < k:
                    set_lp[i] += float(chosen_lp[i])
                if tok in lm.eos_token_ids:
                    finished[i] = True
                    set_len[i] = min(t + 1, k)
                elif t >= k - 1 and (self._ends_clause(tok) or t + 1 >= k + cfg.rollout_max):
                    finished[i] = True
            if all(finished):
                break
            lm.step(rows, choice.to(lm.device))
        return seqs, set_lp, set_len


def rain(lm: LanguageModel, prompt: str, evaluator: Evaluator, config: RainConfig | None = None, *,
         embed: EmbedFn | None = None, use_chat: bool = True) -> RainResult:
    """Run RAIN once (see :class:`Rain`)."""
    return Rain(lm, evaluator, config, embed=embed, use_chat=use_chat).run(prompt)
