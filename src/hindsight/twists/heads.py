"""Learned twist heads: small networks on the frozen LM's last hidden state giving ``log psi`` for every token.

``LinearTwist`` is one linear map ``[d] -> [V]``; ``MLPTwist`` is three layers (as in the twisted-SMC paper);
``TiedTwist`` scores each token through the LM's own output embedding (small, and generalises across tokens).
The output layer starts at zero, so an untrained twist is ``psi = 1`` (bootstrap SMC).
``bounded=True`` squashes the output through ``log sigmoid`` (``psi <= 1``), which a classifier-style learner
such as FUDGE needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hindsight.errors import HindsightError
from hindsight.lm.base import DecodeState


class TwistHead(nn.Module):
    """Base of the learned twists: ``features(h)`` then an output layer over the vocabulary."""

    kind = "head"

    def __init__(self, hidden_size: int, vocab_size: int, *, bounded: bool = False) -> None:
        super().__init__()
        self.hidden_size, self.vocab_size, self.bounded = hidden_size, vocab_size, bounded

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _make_output(self, in_features: int) -> None:
        """The output layer over the vocabulary, zero so that the untrained twist is psi = 1."""
        self.out = nn.Linear(in_features, self.vocab_size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _squash(self, raw: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(raw) if self.bounded else raw

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, V]`` log psi for every next token (``memory``: see :meth:`prefix_memories`)."""
        return self._squash(self.out(self.features(hidden.float())))

    def log_psi_at(self, hidden: torch.Tensor, tokens: torch.Tensor, memory: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """``log psi`` of one chosen token per row (``[m]``), computing only those output columns (training)."""
        f = self.features(hidden.float())
        raw = (f * self.out.weight[tokens]).sum(-1) + self.out.bias[tokens]
        return self._squash(raw)

    @property
    def uses_prefix(self) -> bool:
        """Whether the head also reads the tokens generated so far (see :meth:`prefix_memories`)."""
        return False

    def prefix_memories(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """``[K, T + 1]``: what the head remembers of ``tokens[:, :t]`` for ``t = 0..T`` (None: nothing)."""
        return None

    def log_psi(self, state: DecodeState) -> torch.Tensor:
        """The :class:`~hindsight.twists.base.Twist` interface used by the samplers (no gradients)."""
        dev = next(self.parameters()).device
        with torch.no_grad():
            memory = self.prefix_memories(state.tokens.to(dev)) if self.uses_prefix else None
            return self.forward(state.hidden.to(dev), memory=None if memory is None else memory[:, -1])

    needs_embeddings = False

    def attach(self, lm: Any) -> TwistHead:
        """Give the head what it needs from the model it runs on (a tied head: the output embeddings)."""
        if self.needs_embeddings:
            self.bind(lm.output_embeddings())
        return self

    def bind(self, embeddings: torch.Tensor) -> TwistHead:  # pragma: no cover - only tied heads bind
        return self

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "hidden_size": self.hidden_size, "vocab_size": self.vocab_size,
                "bounded": self.bounded}


class LinearTwist(TwistHead):
    kind = "linear"

    def __init__(self, hidden_size: int, vocab_size: int, **kw: Any) -> None:
        super().__init__(hidden_size, vocab_size, **kw)
        self._make_output(hidden_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLPTwist(TwistHead):
    kind = "mlp"

    def __init__(self, hidden_size: int, vocab_size: int, *, width: int = 256, **kw: Any) -> None:
        super().__init__(hidden_size, vocab_size, **kw)
        self.width = width
        self.body = nn.Sequential(
            nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self._make_output(width)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width}


class TiedTwist(TwistHead):
    """``log psi(h, s) = c(h) + g(h) · e_s`` with ``e_s`` the frozen LM's own output embedding of token ``s``.

    Why: a per-token output layer (``LinearTwist``) learns only the tokens its training samples contain and
    leaves every other token at ``psi = 1``; once the seen tokens are pushed down, the proposal over-favours
    the unseen ones. Tying the outputs to the LM's embeddings lets what is learned about one token carry to
    similar tokens, with ``~2·d·rank`` parameters instead of ``d·V``. ``g`` is low rank (``rank``) plus a
    constant direction (``rank=0``: the direction alone, a token-level preference that cannot memorise
    prefixes); ``c`` is a per-state level. Needs :meth:`bind` (or ``attach(lm)``) before use: the
    embeddings are not stored in the twist file.

    ``memory=True`` replaces the token term ``d · e_s`` by a saturating score of the whole completion so far,
    ``beta · [log sigmoid(b + sum_{j<t} u_{s_j} + u_s) - log sigmoid(b)]`` with ``u_s = d · e_s``. Why: with the
    token term alone, ``psi_t`` forgets a word as soon as the next token is drawn. A particle that just wrote a
    word the potential rewards then loses that bonus at the next step's weight, resampling kills it, and an
    exact sample clamped in conditional SMC regains it only through ``phi`` at the end (an inflated upper bound).
    The memory keeps the word's credit for the rest of the completion and, like a classifier's logit, saturates.
    """

    kind = "tied"
    needs_embeddings = True

    def __init__(self, hidden_size: int, vocab_size: int, *, rank: int = 64, memory: bool = False, **kw: Any) -> None:
        super().__init__(hidden_size, vocab_size, **kw)
        self.rank, self.memory = rank, memory
        if memory:  # beta = 1, b = -4: a word can add up to ~4 nats until learned otherwise; with d = 0 the
            # output is exactly 0 (bootstrap), and every parameter still gets a gradient
            self.mem_scale = nn.Parameter(torch.ones(()))
            self.mem_bias = nn.Parameter(torch.full((), -4.0))
        n_in = hidden_size
        self.down = nn.Linear(n_in, rank, bias=False) if rank else None
        self.up = nn.Linear(rank, hidden_size, bias=False) if rank else None
        self.direction = nn.Parameter(torch.zeros(hidden_size))  # the same for every state
        self.level = nn.Linear(n_in, 1)
        # zero output: the untrained twist is psi = 1
        for w in (self.level.weight, self.level.bias, *([self.up.weight] if rank else [])):
            nn.init.zeros_(w)
        self.register_buffer("embeddings", torch.zeros(0, hidden_size), persistent=False)

    def bind(self, embeddings: torch.Tensor) -> TiedTwist:
        if tuple(embeddings.shape) != (self.vocab_size, self.hidden_size):
            raise HindsightError(f"Output embeddings of shape {tuple(embeddings.shape)} do not fit this twist "
                                 f"(vocabulary {self.vocab_size}, hidden {self.hidden_size}).")
        self.embeddings = embeddings.detach().float().to(self.direction.device)
        return self

    def _check_bound(self) -> None:
        if self.embeddings.numel() == 0:
            raise HindsightError("A tied twist head needs the model's output embeddings: load it with "
                                 "load_twist(path, lm=lm) or call head.attach(lm).")

    def _parts(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The per-state level and the per-state token direction (None: only the shared direction)."""
        self._check_bound()
        x = hidden.float()
        g = None if self.memory else self.direction.expand(x.shape[0], -1)
        if self.down is not None:
            ctx = self.up(self.down(x))
            g = ctx if g is None else g + ctx
        return self.level(x).squeeze(-1), g

    @property
    def uses_prefix(self) -> bool:
        return self.memory

    def _token_scores(self, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``u_s = d · e_s`` for the given tokens (every token when None)."""
        emb = self.embeddings if tokens is None else self.embeddings[tokens]
        return emb @ self.direction

    def _remembered(self, memory: torch.Tensor | float, u: torch.Tensor) -> torch.Tensor:
        """``beta · [log sigmoid(b + M + u) - log sigmoid(b)]``, broadcast over ``u``'s last dimension."""
        b = self.mem_bias
        return self.mem_scale * (F.logsigmoid(b + memory + u) - F.logsigmoid(b))

    def prefix_memories(self, tokens: torch.Tensor) -> torch.Tensor | None:
        if not self.memory:
            return None
        self._check_bound()
        u = self._token_scores(tokens)  # [K, T]: only the tokens written, not the whole vocabulary
        return torch.cat([u.new_zeros(u.shape[0], 1), torch.cumsum(u, dim=1)], dim=1)

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        level, g = self._parts(hidden)
        out = level[:, None]
        if g is not None:
            out = out + g @ self.embeddings.T
        if self.memory:  # memory None: nothing written yet
            out = out + self._remembered(0.0 if memory is None else memory[:, None], self._token_scores()[None, :])
        return self._squash(out)

    def log_psi_at(self, hidden: torch.Tensor, tokens: torch.Tensor, memory: torch.Tensor | None = None
                   ) -> torch.Tensor:
        level, g = self._parts(hidden)
        out = level
        if g is not None:
            out = out + (g * self.embeddings[tokens]).sum(-1)
        if self.memory:
            out = out + self._remembered(0.0 if memory is None else memory, self._token_scores(tokens))
        return self._squash(out)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank, "memory": self.memory}


HEADS = {"linear": LinearTwist, "mlp": MLPTwist, "tied": TiedTwist}


def make_head(kind: str, hidden_size: int, vocab_size: int, **kw: Any) -> TwistHead:
    if kind not in HEADS:
        raise HindsightError(f"Unknown twist head {kind!r}; choose one of {', '.join(HEADS)}.")
    return HEADS[kind](hidden_size, vocab_size, **kw)


def head_from_config(cfg: dict[str, Any]) -> TwistHead:
    cfg = dict(cfg)
    if cfg.pop("cond_size", 0):  # older files carried an (always empty) conditioning vector
        raise HindsightError("This twist file uses a conditioning vector, which this version no longer supports.")
    kind = cfg.pop("kind")
    return make_head(kind, cfg.pop("hidden_size"), cfg.pop("vocab_size"), **cfg)
