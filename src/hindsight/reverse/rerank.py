"""Best-of-N reranking: sample N responses that share one prefill of the prompt, score each (prompt,
response) pair with any scorer, keep the best. With a TRLM scorer this is the paper's reverse-feedback
selection: the response from which the prompt is most predictable."""

from __future__ import annotations

from dataclasses import dataclass

from hindsight.lm import LanguageModel, check_sampling_args
from hindsight.reverse.scorers import PairScorer


@dataclass
class Reranked:
    text: str
    index: int
    candidates: list[dict]  # text, score, tokens, logprob, finish_reason

    def as_dict(self) -> dict:
        return {"text": self.text, "index": self.index, "candidates": self.candidates}


def best_of_n(lm: LanguageModel, prompt: str, scorer: PairScorer, *, n: int = 16, temperature: float = 0.8,
              max_tokens: int = 128, seed: int | None = None, normalise: bool = False) -> Reranked:
    """Sample ``n`` (paper: 16 at temperature 0.8) and return the highest-scoring one with every candidate."""
    check_sampling_args(n=n, max_tokens=max_tokens, temperature=temperature)
    samples = lm.generate(prompt, n=n, max_tokens=max_tokens, temperature=temperature, seed=seed)
    scores = scorer.score([prompt] * n, [s.text if s.text.strip() else " " for s in samples])
    values = scores.pick(normalise).tolist()
    best = max(range(n), key=lambda i: values[i])
    cands = [{"text": s.text, "score": v, "tokens": len(s.tokens), "logprob": s.logprob,
              "finish_reason": s.finish_reason} for s, v in zip(samples, values)]
    return Reranked(text=samples[best].text, index=best, candidates=cands)
