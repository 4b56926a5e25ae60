"""The transformers backend: any local causal LM, on CPU or GPU.

A prompt is prefilled once with batch size 1 (or found in the prefix LRU, see ``prefix_cache.py``). Two cache
layouts (``kv_layout``):

- ``"shared"`` (default where ``cascade.covers`` the model): the prompt's keys/values are held once and each row's
  own tokens apart (``cascade.SharedPrefixCache``); ``select`` gathers only the rows' own tokens.
- ``"per-row"`` (``HINDSIGHT_KV_LAYOUT=per-row``, or any other model type): a transformers ``DynamicCache``
  whose prompt rows are an expanded view; the first ``step`` materialises one copy of the prompt per row.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging as hf_logging

from hindsight.errors import HindsightError
from hindsight.lm import cascade
from hindsight.lm.base import DecodeState, LanguageModel
from hindsight.lm.cascade import SharedPrefixCache, expand_rows, prefix_tensors, take_rows
from hindsight.lm.device import check_finite, resolve_device
from hindsight.lm.prefix_cache import Prefill, PrefixLRU


def quiet_offline_transformers(progress_bars: bool = False) -> None:
    """Offline, quiet transformers: set when a model is loaded (never at import, which must change nothing).

    Every load passes ``local_files_only`` anyway; the environment variable also keeps libraries that read it
    (sentence-transformers) off the hub.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    hf_logging.set_verbosity_error()
    if progress_bars:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


DEFAULT_TOKEN_BUDGET = 8192  # padded tokens per scoring forward


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HFLanguageModel(LanguageModel):
    """A transformers causal LM behind the :class:`LanguageModel` interface."""

    def __init__(self, model, tokenizer, name: str = "model", device: str | torch.device | None = None,
                 kv_layout: str | None = None) -> None:
        super().__init__()
        self.device = torch.device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        # transformers renamed the forward's ``past_key_values`` to ``cache`` (the old name is deprecated there)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.tokenizer = tokenizer
        self.name = name
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.hidden_size = int(cfg.hidden_size)
        self.max_length = int(getattr(cfg, "max_position_embeddings", None) or tokenizer.model_max_length)
        self.eos_token_ids = _eos_ids(model, tokenizer)
        if not self.eos_token_ids:
            raise HindsightError(f"Model {name} defines no end-of-sequence token.")
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_ids[0]
        self._softcap = getattr(cfg, "final_logit_softcapping", None)
        self.prefixes = PrefixLRU()
        self.kv_layout = kv_layout or os.environ.get("HINDSIGHT_KV_LAYOUT", "shared")

    @property
    def kv_layout(self) -> str:
        """``"shared"`` (one copy of the prompt's KV cache) or ``"per-row"``; applies to states started later."""
        return self._kv_layout

    @kv_layout.setter
    def kv_layout(self, layout: str) -> None:
        self._kv_layout = cascade.choose_layout(self.model, layout)

    # ---- text -------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def chat(self, messages, add_generation_prompt: bool = True) -> list[int]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        else:  # a model without a template: plain "role: content" lines
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            text += "assistant:" if add_generation_prompt else ""
        return self.encode(text)

    # ---- forward ------------------------------------------------------------------------------------------
    def _forward(self, input_ids, *, cache=None, attention_mask=None, position_ids=None, all_logits=False):
        """One forward pass; returns (logits of the last position or all, last-layer hidden states, cache)."""
        t0 = time.perf_counter()
        extra = {"shared_prefix": cache} if isinstance(cache, SharedPrefixCache) else {}
        with torch.no_grad():
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=cache is not None,
                # only the last layer's hidden states (all of them would be [layers + 1, B, L, d] at a prefill)
                output_hidden_states=-1,
                logits_to_keep=0 if all_logits else 1,
                **{self._cache_kwarg: cache},
                **extra,
            )
        check_finite(self.name, out.hidden_states[-1], attention_mask)
        self.counters.forward_passes += 1
        self.counters.tokens += int(input_ids.numel())
        self.counters.seconds += time.perf_counter() - t0
        new_cache = getattr(out, "cache", None)
        return out.logits, out.hidden_states[-1], new_cache if new_cache is not None else out.past_key_values

    def output_embeddings(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight.detach().float()

    def logprobs_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs from final hidden states (the LM head applied only where needed)."""
        head = self.model.get_output_embeddings()
        with torch.no_grad():
            logits = head(hidden.to(device=head.weight.device, dtype=head.weight.dtype)).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return torch.log_softmax(logits, dim=-1)

    # ---- decoding engine ---------------------------------------------------------------------------------
    def start(self, prompt_ids: Sequence[int], n: int = 1) -> DecodeState:
        if n < 1:
            raise HindsightError(f"The number of rows must be at least 1 (got {n}).")
        ids = [int(i) for i in prompt_ids]
        if not ids:
            raise HindsightError("The prompt is empty.")
        if len(ids) >= self.max_length:
            raise HindsightError(f"The prompt is {len(ids)} tokens; {self.name} has a context of {self.max_length}.")
        pre = self._prefill(ids)
        if self.kv_layout == "shared":
            cache = SharedPrefixCache.from_prefix(pre.keys, pre.values, n)
        else:
            cache = expand_rows(DynamicCache(ddp_cache_data=list(zip(pre.keys, pre.values))), n)
        return DecodeState(
            prompt_ids=ids,
            tokens=torch.zeros((n, 0), dtype=torch.long, device=self.device),
            done=torch.zeros(n, dtype=torch.bool, device=self.device),
            logprobs=pre.logprobs.expand(n, -1),
            hidden=pre.hidden.expand(n, -1),
            cache=cache,
        )

    def _prefill(self, ids: list[int]) -> Prefill:
        """The prompt's keys/values and next-token distribution: from the LRU, or prefilled on top of the
        longest stored prefix of it (counted in ``counters.prefix_hits``/``prefix_tokens``)."""
        key = tuple(ids)
        hit = self.prefixes.lookup(key)
        if hit is not None:
            self.counters.prefix_hits += 1
            self.counters.prefix_tokens += len(hit.ids)
            if len(hit.ids) == len(ids):
                return hit
        past = DynamicCache() if hit is None else DynamicCache(ddp_cache_data=list(zip(hit.keys, hit.values)))
        done = 0 if hit is None else len(hit.ids)
        x = torch.tensor([ids[done:]], dtype=torch.long, device=self.device)
        pos = None if hit is None else torch.arange(done, len(ids), device=self.device)[None]
        logits, hidden, cache = self._forward(x, cache=past, position_ids=pos)
        layers = cache.layers
        pre = Prefill(key, [lay.keys for lay in layers], [lay.values for lay in layers],
                      torch.log_softmax(logits[:, -1].float(), dim=-1), hidden[:, -1])
        self.prefixes.put(pre)
        return pre

    def step(self, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device).reshape(-1)
        if tokens.shape[0] != state.n:
            raise HindsightError(f"step got {tokens.shape[0]} tokens for {state.n} rows.")
        if state.length >= self.max_length:
            raise HindsightError(f"The sequence reached {self.name}'s context of {self.max_length} tokens.")
        tokens = torch.where(state.done, torch.full_like(tokens, self.pad_token_id), tokens)
        pos = torch.full((state.n, 1), state.length, dtype=torch.long, device=self.device)
        # the old distribution is stale from here on; letting it go now keeps one [n, V] block off the peak
        state.logprobs = state.hidden = None
        logits, hidden, state.cache = self._forward(tokens[:, None], cache=state.cache, position_ids=pos)
        state.tokens = torch.cat([state.tokens, tokens[:, None]], dim=1)
        state.done = state.done | self.is_eos(tokens)
        state.logprobs = log_softmax_rows_(logits[:, -1].float())
        state.hidden = hidden[:, -1]
        return state

    def extend(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        if tokens.dim() != 2 or tokens.shape[0] != state.n:
            raise HindsightError(f"extend needs a [{state.n}, k] token matrix, got shape {tuple(tokens.shape)}.")
        k = tokens.shape[1]
        if k == 0:
            return torch.zeros((state.n, 0), device=self.device)
        if bool(state.done.any()):
            raise HindsightError("extend cannot append to rows that have already ended.")
        if state.length + k > self.max_length:
            raise HindsightError(f"The sequence would exceed {self.name}'s context of {self.max_length} tokens.")
        pos = torch.arange(state.length, state.length + k, device=self.device).expand(state.n, -1)
        _, hidden, state.cache = self._forward(tokens, cache=state.cache, position_ids=pos)
        lp_all = self.logprobs_from_hidden(hidden)  # [n, k, V]
        before = torch.cat([state.logprobs[:, None, :], lp_all[:, :-1]], dim=1)
        token_lp = before.gather(-1, tokens[..., None]).squeeze(-1)
        state.tokens = torch.cat([state.tokens, tokens], dim=1)
        state.done = state.done | self.is_eos(tokens).any(dim=1)
        state.logprobs = lp_all[:, -1]
        state.hidden = hidden[:, -1]
        return token_lp

    def select(self, state: DecodeState, rows) -> DecodeState:
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.device).reshape(-1)
        if idx.numel() == 0:
            raise HindsightError("select needs at least one row.")
        if int(idx.min()) < 0 or int(idx.max()) >= state.n:
            raise HindsightError(f"select got a row outside 0..{state.n - 1}.")
        tokens = state.tokens[idx]
        return DecodeState(
            prompt_ids=state.prompt_ids,
            tokens=tokens,
            done=state.done[idx],
            logprobs=state.logprobs[idx],
            hidden=state.hidden[idx],
            cache=cascade.fold_common(take_rows(state.cache, idx), tokens),
        )

    # ---- scoring ------------------------------------------------------------------------------------------
    def _batches(
        self,
        seqs: list[list[int]],
        prefix: DecodeState | None,
        padding_side: str,
        batch_size: int | None,
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Padded forwards over ``seqs`` grouped by length; yields (indices, hidden [B, L, d], start column)."""
        if padding_side not in ("left", "right"):
            raise HindsightError(f"padding_side must be 'left' or 'right' (got {padding_side!r}).")
        if prefix is not None and prefix.n != 1:
            raise HindsightError("A scoring prefix must be a one-row state from start().")
        offset = prefix.length if prefix is not None else 0
        longest = max(len(s) for s in seqs) if seqs else 0
        if offset + longest > self.max_length:
            raise HindsightError(
                f"A sequence of {offset + longest} tokens exceeds {self.name}'s context of {self.max_length}."
            )
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        shared = prefix is not None and isinstance(prefix.cache, SharedPrefixCache)
        pre_kv = prefix_tensors(prefix.cache) if shared else None
        i = 0
        while i < len(order):
            width = max(len(seqs[order[i]]), 1)
            b = batch_size or max(1, DEFAULT_TOKEN_BUDGET // width)
            group = order[i : i + b]
            i += len(group)
            ids = torch.full((len(group), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            starts = torch.zeros(len(group), dtype=torch.long)
            for r, j in enumerate(group):
                s = seqs[j]
                c0 = width - len(s) if padding_side == "left" else 0
                ids[r, c0 : c0 + len(s)] = torch.tensor(s, dtype=torch.long)
                mask[r, c0 : c0 + len(s)] = 1
                starts[r] = c0
            pos = (mask.cumsum(-1) - 1).clamp_min(0) + offset
            cache = None
            if prefix is not None:
                if shared:  # the prefix once, every context as its own rows
                    cache = SharedPrefixCache.from_prefix(*pre_kv, len(group))
                else:
                    cache = expand_rows(take_rows(prefix.cache, torch.zeros(1, dtype=torch.long)), len(group))
                mask = torch.cat([torch.ones((len(group), offset), dtype=torch.long), mask], dim=1)
            _, hidden, _ = self._forward(
                ids.to(self.device),
                cache=cache,
                attention_mask=mask.to(self.device),
                position_ids=pos.to(self.device),
                all_logits=False,
            )
            yield group, hidden, starts

    def score(
        self,
        contexts: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[int]],
        *,
        prefix: DecodeState | None = None,
        padding_side: str = "right",
        batch_size: int | None = None,
    ) -> list[torch.Tensor]:
        if len(contexts) != len(continuations):
            raise HindsightError(f"score got {len(contexts)} contexts but {len(continuations)} continuations.")
        ctx = [[int(t) for t in c] for c in contexts]
        cont = [[int(t) for t in c] for c in continuations]
        if prefix is None and any(len(c) == 0 and len(k) > 0 for c, k in zip(ctx, cont)):
            raise HindsightError("Each context needs at least one token (or pass a prefix state).")
        results: list[torch.Tensor] = [torch.zeros(0)] * len(ctx)
        seqs = [c + k for c, k in zip(ctx, cont)]
        for group, hidden, starts in self._batches(seqs, prefix, padding_side, batch_size):
            # the hidden state at column p predicts the token at column p + 1; positions are gathered with
            # one index per sequence (no per-token Python work), the LM head runs only on those rows
            rows, cols, targets, sizes, from_prefix = [], [], [], [], []
            for r, j in enumerate(group):
                c0, nc, nk = int(starts[r]), len(ctx[j]), len(cont[j])
                skip = 1 if nc == 0 and nk > 0 else 0  # the first token follows the prefix directly
                rows.append(torch.full((nk - skip,), r, dtype=torch.long))
                cols.append(torch.arange(c0 + nc - 1 + skip, c0 + nc - 1 + nk, dtype=torch.long))
                targets.extend(cont[j][skip:])
                sizes.append(nk - skip)
                from_prefix.append(skip)
            if targets:
                h = hidden[torch.cat(rows).to(hidden.device), torch.cat(cols).to(hidden.device)]
                lp = _gather_chunked(self.logprobs_from_hidden, h, torch.tensor(targets, device=h.device))
            else:
                lp = torch.zeros(0)
            for j, part, skip in zip(group, torch.split(lp, sizes), from_prefix):
                if skip:
                    part = torch.cat([prefix.logprobs[0, cont[j][0]].reshape(1).float().cpu(), part])
                results[j] = part
        return results

    def next_logprobs(
        self, contexts: Sequence[Sequence[int]], *, prefix: DecodeState | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        ctx = [[int(t) for t in c] for c in contexts]
        if prefix is None and any(len(c) == 0 for c in ctx):
            raise HindsightError("Each context needs at least one token (or pass a prefix state).")
        out = torch.empty((len(ctx), self.vocab_size))
        empty = [j for j, c in enumerate(ctx) if not c]
        for j in empty:
            out[j] = prefix.logprobs[0].cpu()
        todo = [j for j, c in enumerate(ctx) if c]
        seqs = [ctx[j] for j in todo]
        for group, hidden, starts in self._batches(seqs, prefix, "right", batch_size):
            last = torch.tensor([len(seqs[g]) - 1 for g in group])
            lp = self.logprobs_from_hidden(hidden[torch.arange(len(group)), last])
            for r, g in enumerate(group):
                out[todo[g]] = lp[r].cpu()
        return out


def log_softmax_rows_(logits: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """``log_softmax`` over the last dim of ``[n, V]`` ``logits``, written into ``logits`` itself.

    Done ``chunk`` rows at a time so that the temporary is a few rows, not another ``[n, V]`` block (12 MB at
    n=64 with a 49k vocabulary); each row is computed by the same kernel as a whole-matrix call, so the
    values are bit-for-bit the same."""
    for i in range(0, logits.shape[0], chunk):
        logits[i : i + chunk] = torch.log_softmax(logits[i : i + chunk], dim=-1)
    return logits


def _gather_chunked(head, h: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log p(target) for each hidden row, computing the vocabulary projection ``chunk`` rows at a time."""
    parts = []
    for i in range(0, h.shape[0], chunk):
        lp = head(h[i : i + chunk])
        parts.append(lp.gather(-1, targets[i : i + chunk, None]).squeeze(-1).cpu())
    return torch.cat(parts)


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    cand = getattr(gen, "eos_token_id", None) if gen is not None else None
    for c in ([cand] if isinstance(cand, int) else list(cand or [])) + [tokenizer.eos_token_id]:
        if c is not None and int(c) not in ids:
            ids.append(int(c))
    return ids


# ---- loading -----------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, *, name: str | None = None, device=None, dtype=None) -> HFLanguageModel:
    """Load a local transformers checkpoint directory (never contacts a hub)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise HindsightError(f"{path} is not a transformers checkpoint directory (it has no config.json).")
    dev = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    quiet_offline_transformers()  # a cached load takes seconds; its bars would only be noise
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HindsightError(f"Could not load a causal LM from {path}: {first}") from None
    return HFLanguageModel(model, tok, name=name or path.name, device=dev)

