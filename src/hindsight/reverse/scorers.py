"""Scoring (query, response) pairs in either direction, in one batched forward per batch of pairs.

Every scorer is the log-likelihood of a *target* text given a *context* text under some model, built from a
:class:`Template`. Which text is the target decides the direction:

- ``self``      the generator's own ``log P(A | Q)`` through its chat template (sum and per-token mean);
- ``forward``   ``log P(A | Q)`` with a neutral, template-free prompt;
- ``trlm-fo``   a forward model prompted in reverse, ``log P(SP + Q | A + CP)``;
- ``trlm-ba``   a reversed-token-order model, ``log P(rev(SP + Q) | rev(A + CP))``, ``rev`` reversing token ids;
- ``trlm-foba`` a model trained on both directions behind a direction tag (``<fwd>``/``<rev>`` by default, read
  from the :class:`~hindsight.reverse.models.ReverseModel`): ``log P(rev(Q) | <rev> rev(A))`` by default, or
  forwards with ``direction="forward"``: ``log P(A | <fwd> Q)``.

Prompts (SP, CP) differ per application (best-of-N, retrieval, citation), so they live in ``PROMPTS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from hindsight.errors import HindsightError
from hindsight.lm import LanguageModel
from hindsight.reverse.models import ReverseModel, as_reverse_model


@dataclass(frozen=True)
class Template:
    """How a pair becomes (context, target): both are format strings over ``{query}`` and ``{response}``.

    ``chat``: the context is a user turn and the target the assistant reply, through the model's template.
    ``reverse_tokens``: both are encoded and their token ids reversed (for models trained on reversed text);
    the scored sequence is then ``rev(context) | rev(target)``.
    ``tag``: a direction tag put (unreversed) before the context, for models trained on both directions.
    """

    context: str
    target: str
    chat: bool = False
    reverse_tokens: bool = False
    tag: str = ""


# Prompts by application. Wording is ours; the *kind* of prompt follows Yerram et al. (2024): the reverse
# direction conditions on the response and scores the query behind a short phrase naming their relation.
PROMPTS: dict[str, dict[str, Template]] = {
    "answer": {  # best-of-N reranking and preference agreement: Q is an instruction, A its answer
        "self": Template(context="{query}", target="{response}", chat=True),
        "forward": Template(context="Question: {query}\nAnswer:", target=" {response}"),
        "trlm-fo": Template(context="Answer: {response}\n\nThe above is the answer to this question:",
                            target=" {query}"),
        "trlm-ba": Template(context="{response}", target="{query}", reverse_tokens=True),
    },
    "retrieval": {  # Q is a search query or claim, A a passage
        "self": Template(context="{query}", target="{response}", chat=True),
        "forward": Template(context="Query: {query}\nRelevant passage:", target=" {response}"),
        "trlm-fo": Template(context="Passage: {response}\n\nThis passage has an answer to the query:",
                            target=" {query}"),
        "trlm-ba": Template(context="{response}", target="{query}", reverse_tokens=True),
    },
    "citation": {  # Q is a summary sentence, A an article sentence (or a span of sentences)
        "self": Template(context="{query}", target="{response}", chat=True),
        "forward": Template(context="Summary: {query}\nSource sentence:", target=" {response}"),
        "trlm-fo": Template(context="Article: {response}\n\nA summary of the above:", target=" {query}"),
        "trlm-ba": Template(context="{response}", target="{query}", reverse_tokens=True),
    },
}
# Alternative wordings we compared (``make_scorer("trlm-fo@chat", ...)``); results in docs/trlm-scoring.md.
# "with-sp" moves the relation phrase into the scored text, so its likelihood after the response counts too.
PROMPT_VARIANTS: dict[str, dict[str, dict[str, Template]]] = {
    "answer": {"trlm-fo": {
        "bare": Template(context="{response}\n\n", target="{query}"),
        "with-sp": Template(context="Answer: {response}\n\n", target="The above is the answer to this question: {query}"),
        "chat": Template(context="{response}\n\nWrite the question or instruction that the text above answers.",
                         target="{query}", chat=True),
    }},
    "retrieval": {"trlm-fo": {
        "bare": Template(context="{response}\n\n", target="{query}"),
        "claim": Template(context="Abstract: {response}\n\nA claim supported by this abstract:", target=" {query}"),
        "with-sp": Template(context="Passage: {response}\n\n", target="This passage has an answer to the query: {query}"),
    }},
}
SCORERS = ("self", "forward", "trlm-fo", "trlm-ba", "trlm-foba")


@dataclass
class Scores:
    """Per pair: total log-likelihood of the target, its token count, and the per-token mean."""

    total: torch.Tensor  # [B] float64
    tokens: torch.Tensor  # [B] long

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.tokens.clamp_min(1)

    def pick(self, normalise: bool) -> torch.Tensor:
        return self.mean if normalise else self.total


class PairScorer:
    """Scores pairs with one model and one template; ``lm.score`` batches and pads them."""

    def __init__(self, lm: LanguageModel, template: Template, name: str = "scorer") -> None:
        self.lm, self.template, self.name = lm, template, name

    def encode_pair(self, query: str, response: str, encode=None, truncate: bool = True
                    ) -> tuple[list[int], list[int]]:
        """(context ids, target ids) of a pair; a context too long for the model keeps its last tokens unless
        ``truncate`` is False (then the ids are whole, for a caller that refuses what does not fit)."""
        t, lm = self.template, self.lm
        encode = encode or lm.encode
        ctx_text = t.context.format(query=query, response=response)
        tgt_text = t.target.format(query=query, response=response)
        if t.chat:
            ctx = lm.chat(ctx_text)
            tgt = encode(tgt_text) + [lm.eos_token_ids[0]]
        else:
            ctx, tgt = encode(ctx_text), encode(tgt_text)
        if t.reverse_tokens:
            ctx, tgt = ctx[::-1], tgt[::-1]
        tag = encode(t.tag) if t.tag else []
        room = lm.max_length - len(tgt) - len(tag)
        if room < 1 and truncate:
            raise HindsightError(f"Scorer {self.name}: the text to score is {len(tgt)} tokens, more than "
                                 f"{lm.name}'s context of {lm.max_length}.")
        ctx = tag + (ctx[-room:] if truncate else ctx)  # too long: keep the context tokens nearest the scored text
        if not ctx:
            raise HindsightError(f"Scorer {self.name}: the context of a pair is empty.")
        if not tgt:
            raise HindsightError(f"Scorer {self.name}: the text to score is empty.")
        return ctx, tgt

    def score(self, queries: Sequence[str], responses: Sequence[str], batch_size: int | None = None) -> Scores:
        if len(queries) != len(responses):
            raise HindsightError(f"{len(queries)} queries but {len(responses)} responses.")
        memo: dict[str, list[int]] = {}  # N candidates for one query repeat the same text: encode it once

        def encode(text: str) -> list[int]:
            if text not in memo:
                memo[text] = self.lm.encode(text)
            return list(memo[text])

        pairs = [self.encode_pair(q, a, encode) for q, a in zip(queries, responses)]
        if not pairs:
            return Scores(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
        per_token = self.lm.score([c for c, _ in pairs], [t for _, t in pairs], batch_size=batch_size)
        total = torch.tensor([float(s.double().sum()) for s in per_token], dtype=torch.float64)
        return Scores(total, torch.tensor([len(t) for _, t in pairs]))


def make_scorer(
    name: str,
    lm: LanguageModel,
    *,
    task: str = "answer",
    reverse_lm: ReverseModel | LanguageModel | None = None,
    template: Template | None = None,
    direction: str = "reverse",
) -> PairScorer:
    """A scorer by name. ``trlm-ba``/``trlm-foba`` need ``reverse_lm``, a model trained on reversed tokens
    (a :class:`ReverseModel` from ``load_reverse_model``; a plain language model is taken as one of unknown mode).

    ``direction`` only matters for ``trlm-foba``: "reverse" (the default) scores the query given the response,
    "forward" uses the same model as a forward scorer of the response given the query.
    """
    full = name
    name, _, variant = name.partition("@")
    if name not in SCORERS:
        raise HindsightError(f"Unknown scorer {full!r}; choose one of {', '.join(SCORERS)}.")
    if task not in PROMPTS:
        raise HindsightError(f"Unknown scoring task {task!r}; choose one of {', '.join(PROMPTS)}.")
    key = "trlm-ba" if name == "trlm-foba" else name
    tpl = template or PROMPTS[task][key]
    if variant:
        options = PROMPT_VARIANTS.get(task, {}).get(name, {})
        if variant not in options:
            raise HindsightError(f"Scorer {name} has no prompt variant {variant!r} for {task}; "
                                 f"known: {', '.join(options) or 'none'}.")
        tpl = options[variant]
    model = lm
    rev = as_reverse_model(reverse_lm)
    if name in ("trlm-ba", "trlm-foba"):
        if rev is None:
            raise HindsightError(f"Scorer {name} needs a reverse-trained model (reverse_model / --reverse-model).")
        rev.check_mode(name)
        model = rev.lm
        tpl = replace(tpl, reverse_tokens=True)
        if name == "trlm-foba":
            if direction == "forward":
                tpl = Template(context="{query}", target="{response}", tag=rev.forward_tag)
            elif direction == "reverse":
                tpl = replace(tpl, tag=rev.reverse_tag)
            else:
                raise HindsightError(f"direction must be 'forward' or 'reverse' (got {direction!r}).")
    return PairScorer(model, tpl, name=full)
