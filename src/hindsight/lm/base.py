"""The language-model interface every sampler, scorer and potential is written against.

A backend (``hf.py``) implements a handful of batched primitives; everything else here (generation, text
helpers, argument checks) is shared so that a new backend is one small file.

Conventions:
- token ids are plain ``list[int]`` at the edges and ``torch.long`` tensors inside the engine;
- log-probabilities are natural-log, float32, under the *unmodified* model (temperature 1, no truncation);
- a ``DecodeState`` holds ``n`` rows that share one prompt, whose KV cache is computed once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.infra import seeded_generator
from hindsight.lm.sampling import sample_next


@dataclass
class Counters:
    """Cost counters: forward passes, token positions computed, seconds spent in forward passes."""

    forward_passes: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def snapshot(self) -> Counters:
        return Counters(self.forward_passes, self.tokens, self.seconds)

    def since(self, earlier: Counters) -> Counters:
        return Counters(
            self.forward_passes - earlier.forward_passes,
            self.tokens - earlier.tokens,
            self.seconds - earlier.seconds,
        )

    def as_dict(self) -> dict[str, float]:
        return {"forward_passes": self.forward_passes, "tokens": self.tokens, "seconds": round(self.seconds, 4)}


@dataclass
class DecodeState:
    """``n`` decoding rows after one shared prompt.

    ``tokens`` are the tokens appended after the prompt (``[n, t]``); every row has the same length, and a row
    that has finished (``done``) keeps being fed a filler token whose results nobody reads, so the cache stays
    rectangular and no row is ever recomputed. ``logprobs``/``hidden`` describe the position after the last
    token of each row.
    """

    prompt_ids: list[int]
    tokens: torch.Tensor  # [n, t] long
    done: torch.Tensor  # [n] bool
    logprobs: torch.Tensor  # [n, V] float32: next-token log-probs
    hidden: torch.Tensor  # [n, d]: last hidden state at the last position
    cache: Any = field(repr=False)  # backend-specific KV cache

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        """Total positions per row (prompt + appended tokens)."""
        return len(self.prompt_ids) + int(self.tokens.shape[1])


@dataclass
class Sample:
    """One generated completion. ``logprob`` is its log-probability under the unmodified model."""

    text: str
    tokens: list[int]
    logprob: float
    finish_reason: str  # "eos", "stop" or "length"

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "logprob": self.logprob, "finish_reason": self.finish_reason}


class LanguageModel(ABC):
    """A causal LM with a shared-prefix decoding engine. See the module docstring for conventions."""

    name: str
    vocab_size: int
    max_length: int  # context window in tokens
    eos_token_ids: list[int]
    pad_token_id: int
    device: torch.device
    hidden_size: int  # width of the last hidden state (``DecodeState.hidden``), what twist heads read

    def __init__(self) -> None:
        self.counters = Counters()

    # ---- text -------------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    @abstractmethod
    def chat(self, messages: str | Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Prompt ids from the tokenizer's own chat template (a bare string is one user turn)."""

    def token_id(self, text: str) -> int:
        """The id of a string that must be exactly one token (e.g. an answer option such as " A")."""
        ids = self.encode(text)
        if len(ids) != 1:
            raise HindsightError(f"{text!r} is {len(ids)} tokens for model {self.name}, expected exactly one.")
        return ids[0]

    def output_embeddings(self) -> torch.Tensor:
        """``[V, d]`` rows of the output layer (detached, float32): what a twist head can tie its outputs to."""
        raise HindsightError(f"Model {self.name} does not expose its output embeddings.")

    def logprobs_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., V]`` next-token log-probs from last hidden states such as ``DecodeState.hidden``."""
        raise HindsightError(f"Model {self.name} cannot map hidden states to next-token probabilities.")

    # ---- batched primitives (backend) ---------------------------------------------------------------------
    @abstractmethod
    def score(
        self,
        contexts: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[int]],
        *,
        prefix: DecodeState | None = None,
        padding_side: str = "right",
        batch_size: int | None = None,
    ) -> list[torch.Tensor]:
        """Per-token log-probs of each continuation given its context, in padded batched forwards.

        With ``prefix`` (a one-row state from :meth:`start`), every context is read as following that
        prefix, whose KV cache is reused instead of recomputed. Results do not depend on padding side or
        batch composition (to float tolerance).
        """

    @abstractmethod
    def next_logprobs(
        self, contexts: Sequence[Sequence[int]], *, prefix: DecodeState | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        """Next-token log-probs ``[B, V]`` after each context (optionally after a cached ``prefix``)."""

    @abstractmethod
    def start(self, prompt_ids: Sequence[int], n: int = 1) -> DecodeState:
        """Prefill ``prompt_ids`` once and return a state of ``n`` rows that share it."""

    @abstractmethod
    def step(self, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
        """Append one token per row (``[n]``), in place; returns the same state with new ``logprobs``/``hidden``.

        Rows already ``done`` ignore their token (a filler is fed). A row becomes done when it receives EOS.
        """

    @abstractmethod
    def extend(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``k`` tokens to every row (``[n, k]``) in one forward, in place.

        Returns the log-prob of each appended token given everything before it (``[n, k]``); afterwards
        ``state.logprobs`` is the distribution after the last one. Rows that are ``done`` are not allowed.
        """

    @abstractmethod
    def select(self, state: DecodeState, rows: torch.Tensor | Sequence[int]) -> DecodeState:
        """A new state whose row ``i`` is a copy of ``state``'s row ``rows[i]`` (reorder, duplicate or drop).

        Used for resampling and tree branching; nothing is recomputed. The input state stays valid.
        """

    # ---- shared helpers ------------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str | Sequence[int], *, use_chat: bool = True) -> list[int]:
        """Token ids for a prompt: a string goes through the chat template (or plain encoding), ids pass."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise HindsightError("The prompt is empty.")
            ids = self.chat(prompt) if use_chat else self.encode(prompt)
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise HindsightError("The prompt is empty.")
        return ids

    def check_length(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.max_length:
            raise HindsightError(
                f"The prompt is {n_prompt} tokens and {max_tokens} new tokens were asked for, but {self.name} "
                f"has a context of {self.max_length} tokens."
            )

    def is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        eos = torch.tensor(self.eos_token_ids, device=tokens.device)
        return torch.isin(tokens, eos)

    def generate(
        self,
        prompt: str | Sequence[int],
        n: int = 1,
        max_tokens: int = 64,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        use_chat: bool = True,
    ) -> list[Sample]:
        """Sample ``n`` completions that share the prompt's prefill. ``temperature=0`` is greedy.

        The same seed gives the same samples. ``Sample.logprob`` is under the unmodified model, so it can be
        used as ``log p(x | prompt)`` in importance weights whatever the sampling settings.
        """
        check_sampling_args(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        ids = self.prompt_ids(prompt, use_chat=use_chat)
        self.check_length(len(ids), max_tokens)
        gen = seeded_generator(seed)
        state = self.start(ids, n)
        total = torch.zeros(n, dtype=torch.float64)
        lengths = torch.zeros(n, dtype=torch.long)
        stopped = [False] * n
        for _ in range(max_tokens):
            tok = sample_next(state.logprobs, temperature=temperature, top_p=top_p, top_k=top_k, generator=gen)
            live = (~state.done).cpu()
            chosen_lp = state.logprobs.gather(1, tok[:, None]).squeeze(1).double().cpu()
            total += torch.where(live, chosen_lp, torch.zeros_like(chosen_lp))
            lengths += live.long()
            self.step(state, tok)
            if stop:
                for i in range(n):
                    if not stopped[i] and not bool(state.done[i]):
                        text = self.decode(state.tokens[i].tolist())
                        if any(s in text for s in stop):
                            stopped[i] = True
                            state.done[i] = True
            if bool(state.done.all()):
                break
        rows = state.tokens.cpu()
        return [
            self._finish(rows[i, : lengths[i]].tolist(), float(total[i]), stopped[i], stop) for i in range(n)
        ]

    def _finish(self, tokens: list[int], logprob: float, stopped: bool, stop: Sequence[str]) -> Sample:
        reason = "eos" if tokens and tokens[-1] in self.eos_token_ids else "length"
        text = self.decode(tokens)
        if stopped:
            reason = "stop"
            cut = min((text.find(s) for s in stop if s in text), default=len(text))
            text = text[:cut]
        return Sample(text=text, tokens=tokens, logprob=logprob, finish_reason=reason)


def sampling_problem(
    *, n: int = 1, max_tokens: int = 1, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0
) -> tuple[str, str] | None:
    """The first sampling setting that cannot work, as (parameter, sentence with ``{param}`` for its name)."""
    if n < 1:
        return "n", "{param} " + f"must be at least 1 (got {n})."
    if max_tokens < 1:
        return "max_tokens", "{param} " + f"must be at least 1 (got {max_tokens})."
    if not 0 <= temperature < float("inf"):
        return "temperature", "{param} " + f"must be 0 (greedy) or positive (got {temperature})."
    if not 0 < top_p <= 1:
        return "top_p", "{param} " + f"must be in (0, 1] (got {top_p})."
    if top_k < 0:
        return "top_k", "{param} " + f"must be 0 (off) or positive (got {top_k})."
    return None


def check_sampling_args(
    *, n: int = 1, max_tokens: int = 1, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0
) -> None:
    """The library's own guard (requests are checked earlier, in ``hindsight.api``): one-sentence errors."""
    problem = sampling_problem(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    if problem is not None:
        raise HindsightError(problem[1].replace("{param}", problem[0]))
