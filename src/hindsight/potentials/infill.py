"""Infilling: ``phi(x) = p(suffix | prompt + x)`` under the same model, so that ``sigma`` is the posterior over
the middle of a text given what comes after it (the twisted-SMC paper's infilling task).

The prompt's KV cache is computed once and shared by every scoring batch (``lm.score(..., prefix=...)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hindsight.errors import HindsightError
from hindsight.lm.base import LanguageModel
from hindsight.potentials.base import Potential


class Infill(Potential):
    """``log p(suffix | prompt, x)``: a completion ``x`` scores by how well it leads into ``suffix``.

    A trailing EOS in ``x`` is dropped (the suffix continues the text). Completions given only as text are
    tokenised with the model's tokenizer.
    """

    def __init__(self, lm: LanguageModel, prompt_ids: Sequence[int], suffix: str | Sequence[int]) -> None:
        self.lm = lm
        self.suffix = lm.encode(suffix) if isinstance(suffix, str) else [int(t) for t in suffix]
        if not self.suffix:
            raise HindsightError("The infilling suffix is empty.")
        self.prefix = lm.start(list(prompt_ids), 1)
        text = suffix if isinstance(suffix, str) else lm.decode(self.suffix)
        self.name = f"infill:{text}"

    def _log_phi(self, texts, tokens):
        eos = set(self.lm.eos_token_ids)
        ctx = []
        for text, toks in zip(texts, tokens):
            toks = list(toks) if toks else self.lm.encode(text)
            while toks and toks[-1] in eos:
                toks.pop()
            ctx.append(toks)
        scores = self.lm.score(ctx, [self.suffix] * len(ctx), prefix=self.prefix)
        return torch.tensor([float(s.double().sum()) for s in scores], dtype=torch.float64)
