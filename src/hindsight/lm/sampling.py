"""Turning next-token log-probs into a sampled token: temperature, top-k, top-p, greedy. Pure torch."""

from __future__ import annotations

import torch


def warp(logprobs: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Log-probs of the sampling distribution after temperature, top-k and nucleus truncation ([n, V])."""
    logits = logprobs.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (the top token is always kept)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def sample_next(
    logprobs: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row ([n] long). ``temperature == 0`` takes the argmax.

    Sampling uses a CPU generator so that a seed gives the same tokens on every device.
    """
    if temperature == 0:
        return logprobs.argmax(dim=-1)
    if temperature == 1.0 and top_p >= 1.0 and top_k:
        return sample_top_k(logprobs, top_k, generator=generator)
    lp = logprobs if (temperature == 1.0 and top_k == 0 and top_p >= 1.0) else warp(
        logprobs, temperature=temperature, top_p=top_p, top_k=top_k
    )
    return sample_from_logprobs(lp, generator=generator)


def sample_from_logprobs(logprobs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact categorical sampling by inverting each row's CDF at one uniform draw.

    Why this way: only ``n`` uniforms come from the (CPU) generator, so a seed gives the same tokens on every
    device while the ``[n, V]`` work stays where the log-probs are (drawing ``[n, V]`` noise on the CPU and
    copying it to a GPU cost more than the model's own step there). The CDF is accumulated in float64 and
    searched with ``right=True``, so a token of probability zero is never returned.
    """
    lp = logprobs.float()
    probs = torch.exp(lp - lp.max(dim=-1, keepdim=True).values).double()
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(lp.shape[0], generator=generator, dtype=torch.float64).to(lp.device)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return idx.clamp_max(lp.shape[-1] - 1)


def sample_top_k(logprobs: torch.Tensor, k: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from its ``k`` most likely tokens, renormalised: the draw of
    ``sample_from_logprobs(warp(logprobs, top_k=k))`` (one uniform per row, the CDF over the kept tokens in
    vocabulary order) up to float rounding, without a pass over the whole vocabulary in float64 (on a CPU that
    pass cost milliseconds per row). Ties at the k-th value (where ``warp`` keeps them all) take the general path."""
    lp = logprobs.float()
    if k <= 0 or k >= lp.shape[-1]:
        return sample_from_logprobs(lp, generator=generator)
    vals, idx = torch.topk(lp, k, dim=-1)
    if bool(((lp >= vals[:, -1:]).sum(dim=-1) > k).any()):
        return sample_from_logprobs(warp(lp, top_k=k), generator=generator)
    idx, order = idx.sort(dim=-1)
    vals = vals.gather(1, order)
    cdf = torch.exp(vals - vals.max(dim=-1, keepdim=True).values).double().cumsum(dim=-1)
    u = torch.rand(lp.shape[0], generator=generator, dtype=torch.float64).to(lp.device)
    j = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_max(k - 1)
    return idx.gather(1, j).squeeze(1)
