"""Training twists on a frozen LM: contrastive twist learning (CTL) and the FUDGE baseline.

Both learn from batches of completions drawn by the sampler itself (``run_smc(..., trace=True)``, no
resampling), which records each step's hidden state, so a gradient step only runs the small head. With
``proposal="pool"`` one large pool of model completions is drawn once and every gradient step uses all of it:
the LM runs only while drawing, and the self-normalised estimates (positives towards ``sigma``, each ``log Z_t``)
are taken over thousands of completions rather than one small batch.

**CTL** minimises ``-( E_sigma[ mean_t log psi_t ] - mean_t E_{pi_t}[ log psi_t ] )`` where
``pi_t ∝ p(s_1..t) psi_t(s_1..t)``. Positive term: the batch self-normalised towards ``sigma`` with weights
``p · phi / q``. Negative terms: the same batch reweighted to each ``pi_t`` with ``p · psi_t / q`` (a completion
that already ended sits at its final target): the negative term is the importance estimate of ``log Z_t``,
whose gradient is the self-normalised ``E_{pi_t}[grad log psi_t]``, as the method requires.

**FUDGE** (a baseline from the paper's comparisons) fits ``psi_t = P(phi | s_1..t)`` as a classifier on model
samples: binary cross-entropy of ``log psi_t`` against the label ``phi(x) in [0, 1]`` at every prefix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch

from hindsight.errors import HindsightError
from hindsight.twists.heads import TwistHead

METHODS = ("ctl", "fudge")
PROPOSALS = ("twist", "model", "pool")


@dataclass
class TrainConfig:
    method: str = "ctl"
    steps: int = 200  # gradient steps in total
    batch: int = 64  # completions drawn per round
    inner: int = 4  # gradient steps on each drawn batch
    lr: float = 1e-4  # the paper's toxicity setting (3e-5 for a classifier target)
    max_tokens: int = 20
    min_tokens: int = 0
    # "twist": draw every batch from the current twisted proposal (on-policy); "model": from the model;
    # "pool": draw one large pool of model completions once and take every gradient step on all of it
    proposal: str = "twist"
    # pool only: rows of the pool whose negative CTL term is summed over the whole vocabulary (0: off), and how
    # many of them each gradient step uses
    vocab_rows: int = 64
    vocab_batch: int = 32
    # pool only: share of the pool held out; the CTL loss on it is measured after each round and the head of the
    # round where it was lowest is kept (the in-pool loss keeps falling long after the twist starts to memorise)
    holdout: float = 0.0

    def check(self) -> None:
        if self.method not in METHODS:
            raise HindsightError(f"Unknown twist training method {self.method!r}; "
                                 f"choose one of {', '.join(METHODS)}.")
        if self.steps < 1 or self.batch < 2 or self.inner < 1:
            raise HindsightError("steps and inner must be at least 1 and batch at least 2.")
        if not self.lr > 0:
            raise HindsightError(f"lr must be positive (got {self.lr}).")
        if self.vocab_rows < 0 or self.vocab_batch < 1:
            raise HindsightError("vocab_rows must be at least 0 and vocab_batch at least 1.")
        if not 0 <= self.holdout < 1:
            raise HindsightError(f"holdout must be in [0, 1) (got {self.holdout}).")
        if self.holdout and self.proposal != "pool":
            raise HindsightError("holdout needs proposal='pool' (the held-out rows are part of the pool).")
        if self.proposal not in PROPOSALS:
            raise HindsightError(f"The proposal must be one of {', '.join(PROPOSALS)} (got {self.proposal!r}).")


@dataclass
class Batch:
    """A traced batch: per completion ``k`` and step ``t``."""

    hidden: torch.Tensor  # [K, T, d] hidden state the token at t was drawn from
    tokens: torch.Tensor  # [K, T]
    logp: torch.Tensor  # [K, T] float64 log p of the token
    logq: torch.Tensor  # [K, T] float64 log q of the token (the proposal it was drawn from)
    alive: torch.Tensor  # [K, T] bool: the completion was still running at step t
    log_phi: torch.Tensor  # [K]


@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)  # with a held-out part of the pool: after each round
    val_loss: list[float] = field(default_factory=list)
    best_step: int = 0  # the step whose head was kept (0: the untrained head)

    def as_dict(self) -> dict[str, list]:
        return asdict(self)


Draw = Callable[[TwistHead | None, int, int], dict[str, torch.Tensor]]
"""``draw(twist or None, n, seed)``: ``n`` traced completions from the (twisted) proposal, as recorded by
``hindsight.samplers.smc.run_smc(..., trace=True)``; see :func:`hindsight.samplers.smc.trace_drawer`."""


def as_batch(trace: dict[str, torch.Tensor]) -> Batch:
    return Batch(trace["hidden"], trace["tokens"], trace["logp"], trace["logq"], trace["alive"], trace["log_phi"])


def split_batch(b: Batch, held: int) -> tuple[Batch, Batch]:
    """The first ``len - held`` rows and the last ``held`` rows."""
    k = b.tokens.shape[0] - held
    cols = [getattr(b, f.name) for f in fields(Batch)]
    return Batch(*(x[:k] for x in cols)), Batch(*(x[k:] for x in cols))


@dataclass
class VocabReference:
    """Model-sampled rows kept with the model's whole next-token distribution at every step.

    Why: a pool drawn from the model only shows the twist the tokens the model happened to sample, so the
    sampled-token estimate of ``log Z_t`` never penalises a twist that grows ``psi`` on tokens outside the pool
    (a head that generalises across tokens does exactly that, and the twisted proposal then favours them). On
    these rows ``Z_t`` is summed exactly over the vocabulary: ``E_{s_<t ~ p} sum_s p(s | s_<t) psi_t(s_<t, s)``.
    """

    hidden: torch.Tensor  # [R, T, d]
    tokens: torch.Tensor  # [R, T] (heads that remember the completion so far read them)
    logp: torch.Tensor  # [R, T, V] float32, the model's next-token log-probs at each step
    alive: torch.Tensor  # [R, T]
    log_phi: torch.Tensor  # [R]


def vocab_reference(b: Batch, rows: int, logprobs_from_hidden: Callable[[torch.Tensor], torch.Tensor]
                    ) -> VocabReference:
    """The first ``rows`` completions of a model-sampled batch, with ``log p(. | s_<t)`` at every step."""
    r = min(rows, b.tokens.shape[0])
    h = b.hidden[:r]
    with torch.no_grad():
        lp = torch.stack([logprobs_from_hidden(h[:, t]).float().cpu() for t in range(h.shape[1])], dim=1)
    return VocabReference(h, b.tokens[:r], lp, b.alive[:r], b.log_phi[:r])


def _exact_rows(head: TwistHead, ref: VocabReference, rows: torch.Tensor) -> torch.Tensor:
    """``[len(rows), T]`` per-row ``log sum_s p(s | s_<t) psi_t(s_<t, s)`` (``log phi`` once a row has ended)."""
    alive = ref.alive[rows]
    mem = head.prefix_memories(ref.tokens[rows])
    full = head(ref.hidden[rows][alive], memory=None if mem is None else mem[:, :-1][alive])  # [m, V], with gradients
    vals = torch.logsumexp(ref.logp[rows][alive] + full, dim=-1).double()
    per_row = torch.zeros(alive.shape, dtype=torch.float64).masked_scatter(alive, vals)
    return torch.where(alive, per_row, ref.log_phi[rows].double()[:, None].expand_as(per_row))


def _head_values(head: TwistHead, b: Batch) -> torch.Tensor:
    """``log psi_t(s_1..t)`` at running positions (with gradients), 0 elsewhere. ``[K, T]``."""
    out = torch.zeros(b.tokens.shape, dtype=torch.float32)
    mem = head.prefix_memories(b.tokens)  # before each position: all but the last column
    vals = head.log_psi_at(b.hidden[b.alive], b.tokens[b.alive], memory=None if mem is None else mem[:, :-1][b.alive])
    return out.masked_scatter(b.alive, vals)


def _wsum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum w * x, where zero weight silences any value (0 * -inf = 0)."""
    return torch.where(w > 0, w * x, torch.zeros_like(x)).sum()


def ctl_loss(head: TwistHead, b: Batch, ref: VocabReference | None = None,
             ref_rows: torch.Tensor | None = None) -> torch.Tensor | None:
    """The CTL objective on one batch (None when no completion has phi > 0: nothing to learn from).

    With ``ref`` (the first rows of this same model-sampled pool), the ``ref_rows`` among them (default: all)
    enter each ``log Z_t`` estimate with the exact sum over the vocabulary instead of their one sampled token;
    every other row keeps its sampled-token term. Both are unbiased for ``Z_t``, and keeping every row in the
    normaliser is what stops the head from memorising the positives.

    Its value is ``mean_t [log Z_t-hat(psi) - E_sigma-hat log psi_t]`` (up to a constant that does not depend on
    the twist), an estimate of ``mean_t KL(sigma_t || pi_t)`` plus a constant, so lower is better; its gradient is
    the CTL gradient ``mean_t (E_{pi_t}[grad log psi_t] - E_sigma[grad log psi_t])``.
    """
    lpsi = _head_values(head, b).double()
    ratio = torch.cumsum(torch.where(b.alive, b.logp - b.logq, torch.zeros_like(b.logp)), dim=1)
    final = ratio[:, -1] + b.log_phi  # log p phi / q of the whole completion
    if not math.isfinite(float(final.max())):
        return None
    k, steps = b.tokens.shape
    w_pos = torch.softmax(final, 0)[:, None].expand_as(lpsi)
    pos = _wsum(w_pos, lpsi * b.alive.double()) / steps
    logw_t = torch.where(b.alive, ratio + lpsi, final[:, None].expand_as(ratio))  # towards pi_t, with gradients
    if ref is not None:
        if ref.alive.shape[0] > k:
            raise HindsightError("The vocabulary reference must be rows of the batch it is used with.")
        rows = torch.arange(ref.alive.shape[0]) if ref_rows is None else ref_rows
        logw_t = logw_t.index_copy(0, rows, _exact_rows(head, ref, rows))
    log_z_t = torch.logsumexp(logw_t, dim=0) - math.log(k)
    return (log_z_t.mean() - pos).float()


def fudge_loss(head: TwistHead, b: Batch, ref: VocabReference | None = None,
               ref_rows: torch.Tensor | None = None) -> torch.Tensor | None:
    """Binary cross-entropy of ``psi_t`` against ``phi(x)`` at every running prefix (model samples)."""
    y = torch.exp(b.log_phi)
    if bool((y > 1 + 1e-6).any()):
        raise HindsightError("FUDGE needs a potential with values in [0, 1]; use method='ctl'.")
    a = _head_values(head, b)[b.alive]  # log psi = log sigmoid(raw)
    target = y[:, None].expand_as(b.alive)[b.alive].float().clamp(0, 1)
    log_not = torch.log1p(-torch.exp(a).clamp_max(1 - 1e-6))
    return -(target * a + (1 - target) * log_not).mean()


LOSSES: dict[str, Callable[..., torch.Tensor | None]] = {"ctl": ctl_loss, "fudge": fudge_loss}


class TwistTrainer:
    """One training run in three parts: setup (``__init__``: optimizer, pool, held-out rows, vocabulary
    reference), :meth:`validate` (keep the head with the lowest held-out loss) and :meth:`step` (one gradient
    step); :meth:`run` loops over rounds of ``cfg.inner`` steps per drawn batch."""

    def __init__(self, head: TwistHead, cfg: TrainConfig, draw: Draw, *, optimizer_state: dict | None = None,
                 history: History | None = None, seed: int = 0,
                 logprobs_from_hidden: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        cfg.check()
        if cfg.method == "fudge" and (cfg.proposal == "twist" or not head.bounded):
            raise HindsightError("FUDGE learns from model samples with a bounded head (proposal 'model' or "
                                 "'pool', bounded=True).")
        self.head, self.cfg, self.draw, self.seed = head, cfg, draw, seed
        self.history = history or History()
        self.opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
        if optimizer_state:
            self.opt.load_state_dict(optimizer_state)
        self.loss_fn = LOSSES[cfg.method]
        self.step_count = self.history.steps[-1] if self.history.steps else 0
        self.round = self.step_count // cfg.inner
        self.barren = 0  # rounds in a row in which no completion had phi > 0
        self.best: tuple[float, dict] | None = None
        self.pool, self.held = self._pool()
        self.ref = None
        if self.pool is not None and cfg.vocab_rows > 0 and logprobs_from_hidden is not None and cfg.method == "ctl":
            self.ref = vocab_reference(self.pool, cfg.vocab_rows, logprobs_from_hidden)
        self.pick = torch.Generator().manual_seed(seed)

    def _pool(self) -> tuple[Batch | None, Batch | None]:
        """With ``proposal="pool"``: the pool, drawn once, and its held-out part (None without one)."""
        cfg = self.cfg
        if cfg.proposal != "pool":
            return None, None
        pool = as_batch(self.draw(None, cfg.batch, self.seed * 100_003))
        if cfg.holdout <= 0:
            return pool, None
        n_held = int(round(cfg.holdout * cfg.batch))
        if n_held < 1 or n_held >= cfg.batch:
            raise HindsightError(f"holdout={cfg.holdout} leaves no rows on one side of a pool of {cfg.batch}.")
        return split_batch(pool, n_held)

    def validate(self) -> None:
        """Measure the held-out loss of the current head and keep it if it is the best so far."""
        if self.held is None:
            return
        with torch.no_grad():
            v = self.loss_fn(self.head, self.held)
        if v is None or not math.isfinite(float(v)):
            return
        h = self.history
        if not h.val_steps or h.val_steps[-1] != self.step_count:  # a resumed run re-measures its last head
            h.val_steps.append(self.step_count)
            h.val_loss.append(float(v))
        if self.best is None or float(v) < self.best[0]:
            self.best = (float(v), {k: t.detach().clone() for k, t in self.head.state_dict().items()})
            h.best_step = self.step_count

    def next_batch(self) -> Batch:
        if self.pool is not None:
            return self.pool
        proposal = self.head if self.cfg.proposal == "twist" else None
        return as_batch(self.draw(proposal, self.cfg.batch, self.seed * 100_003 + self.round))

    def step(self, batch: Batch) -> float | None:
        """One gradient step on ``batch``; None when no completion had phi > 0 (nothing to learn from)."""
        rows = None
        if self.ref is not None:
            n_ref = self.ref.alive.shape[0]
            rows = torch.randperm(n_ref, generator=self.pick)[: min(self.cfg.vocab_batch, n_ref)]
        loss = self.loss_fn(self.head, batch, self.ref, rows)
        if loss is None and self.pool is not None:  # the pool never changes: waiting would not help
            raise HindsightError(f"No completion in the pool of {self.cfg.batch} had phi > 0; draw a larger pool "
                                 "(batch) or use a softer potential.")
        if loss is None:
            self.barren += 1
            if self.barren >= 20:
                raise HindsightError("No drawn completion had phi > 0 in 20 batches; the potential is too "
                                     "rare for this proposal (try a softer potential or a larger batch).")
            return None
        self.barren = 0
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step_count += 1
        self.history.steps.append(self.step_count)
        self.history.loss.append(float(loss.detach()))
        return self.history.loss[-1]

    def run(self, on_step: Callable[[int, float], None] | None = None,
            on_round: Callable[[int, torch.optim.Optimizer, History], None] | None = None) -> History:
        """Train until ``cfg.steps`` gradient steps are done; the best held-out head is kept at the end."""
        head, cfg = self.head, self.cfg
        head.eval()
        self.validate()  # the starting head (untrained: the bootstrap proposal) is a candidate too
        while self.step_count < cfg.steps:
            batch = self.next_batch()
            self.round += 1
            head.train()
            for _ in range(cfg.inner):
                if self.step_count >= cfg.steps:
                    break
                loss = self.step(batch)
                if loss is None:
                    break
                if on_step:
                    on_step(self.step_count, loss)
            head.eval()
            self.validate()
            if on_round:
                on_round(self.step_count, self.opt, self.history)
        if self.best is not None:
            head.load_state_dict(self.best[1])
            if on_round:
                on_round(self.step_count, self.opt, self.history)  # what is saved is the kept head
        return self.history


def train_twist(
    head: TwistHead,
    cfg: TrainConfig,
    draw: Draw,
    *,
    optimizer_state: dict | None = None,
    history: History | None = None,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    on_round: Callable[[int, torch.optim.Optimizer, History], None] | None = None,
    logprobs_from_hidden: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> History:
    """Train ``head`` in place on batches from ``draw`` until ``cfg.steps`` gradient steps are done (counting
    those in ``history``); see :class:`TwistTrainer`.

    ``on_step(step, loss)`` is called after each gradient step (progress bars); ``on_round`` after each batch
    (checkpointing). Resuming = passing the saved optimizer state and history back in.
    ``logprobs_from_hidden`` (the LM's ``logprobs_from_hidden``): with a pool and ``cfg.vocab_rows > 0``, CTL's
    negative terms are summed over the whole vocabulary on that many pool rows (see :class:`VocabReference`).
    """
    trainer = TwistTrainer(head, cfg, draw, optimizer_state=optimizer_state, history=history, seed=seed,
                           logprobs_from_hidden=logprobs_from_hidden)
    return trainer.run(on_step, on_round)


def plot_history(history: History, path: str, title: str = "twist training") -> None:
    """The training curve (loss per gradient step, and its running mean) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history.steps, history.loss, lw=0.8, alpha=0.5, label="loss")
    k = max(1, len(history.loss) // 20)
    if len(history.loss) >= k:
        smooth = torch.tensor(history.loss).unfold(0, k, 1).mean(1).tolist()
        ax.plot(history.steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    if history.val_loss:
        ax.plot(history.val_steps, history.val_loss, "o-", ms=3, lw=1.2, label="held-out loss")
        ax.axvline(history.best_step, color="grey", ls=":", lw=1, label=f"kept (step {history.best_step})")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
