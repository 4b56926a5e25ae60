"""Reverse generation: sample queries that could have produced a given response.

Two styles, matching the scorers in :mod:`hindsight.reverse.scorers` so that a generated query's log-probability
is exactly what the corresponding scorer would give it:

- **TRLM-Fo**: a forward model reads the response followed by a conditioning phrase that asks for the question
  it answers (a plain template or a chat turn), and continues with the query.
- **TRLM-Ba**: a model trained on reversed token order reads ``rev(tokens of the response)`` and samples the
  query's tokens last-to-first; the sampled ids are reversed before decoding.

All K queries for one response share one prefill of the response (``lm.generate`` does that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hindsight.errors import HindsightError
from hindsight.lm import LanguageModel, check_sampling_args
from hindsight.reverse.models import ReverseModel, as_reverse_model
from hindsight.reverse.scorers import PROMPTS, Template

# The Fo generation prompt: the same wording as the best-of-N TRLM-Fo scorer, so generation and scoring agree.
FO_TEMPLATE = PROMPTS["answer"]["trlm-fo"]
# A chat alternative for instruction-tuned models that do not continue plain templates well.
FO_CHAT_TEMPLATE = Template(
    context="Here is a reply an assistant wrote:\n\n{response}\n\nWrite the one user request this reply was "
    "written for. Give only the request.",
    target="{query}",
    chat=True,
)
BA_TEMPLATE = PROMPTS["answer"]["trlm-ba"]


@dataclass
class ReverseQuery:
    """One generated query. ``tokens`` are in reading (forward) order, without the end token; ``logprob`` is
    the log-probability of everything sampled (the end token included, when one was sampled)."""

    text: str
    tokens: list[int]
    logprob: float
    finish_reason: str

    def as_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "logprob": self.logprob, "finish_reason": self.finish_reason}


class ReverseGenerator:
    """Samples K queries for a response with one model and one template (see the module docstring)."""

    def __init__(
        self,
        lm: LanguageModel,
        template: Template = FO_TEMPLATE,
        *,
        max_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] = ("\n",),
    ) -> None:
        check_sampling_args(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        if "{query}" not in template.target:
            raise HindsightError("A reverse-generation template needs {query} in its target.")
        self.lm, self.template = lm, template
        self.max_tokens, self.temperature, self.top_p, self.top_k = max_tokens, temperature, top_p, top_k
        # Stop strings are matched on the generated text in generation order; for reversed tokens that text is
        # backwards, so only the end token (or the length limit) ends a reversed query.
        self.stop = () if template.reverse_tokens else tuple(stop)
        self.name = "trlm-ba" if template.reverse_tokens else "trlm-fo"

    def prompt_ids(self, response: str) -> list[int]:
        """The ids the model is conditioned on: the context, reversed for a reversed-order model."""
        if not response.strip():
            raise HindsightError("The response to generate queries for is empty.")
        t = self.template
        text = t.context.format(response=response, query="")
        ids = self.lm.chat(text) if t.chat else self.lm.encode(text)
        return ids[::-1] if t.reverse_tokens else ids

    def generate(self, response: str, n: int = 4, *, seed: int | None = None) -> list[ReverseQuery]:
        """``n`` queries that could have produced ``response``, sharing one prefill of it."""
        check_sampling_args(n=n)
        samples = self.lm.generate(
            self.prompt_ids(response), n=n, max_tokens=self.max_tokens, temperature=self.temperature,
            top_p=self.top_p, top_k=self.top_k, stop=self.stop, seed=seed,
        )
        return [self._query(s.tokens, s.logprob, s.finish_reason) for s in samples]

    def _query(self, tokens: list[int], logprob: float, finish: str) -> ReverseQuery:
        ids = [t for t in tokens if t not in self.lm.eos_token_ids]
        if self.template.reverse_tokens:
            ids = ids[::-1]
        text = self.lm.decode(ids)
        if self.template.reverse_tokens:  # exactly the tokens sampled: scoring this text gives the same ids
            return ReverseQuery(text=text, tokens=ids, logprob=logprob, finish_reason=finish)
        for s in self.stop:  # generate() reports the text cut at a stop string; cut ours the same way
            if s in text:
                text = text[: text.find(s)]
        prefix, _, suffix = self.template.target.partition("{query}")
        if prefix and text.startswith(prefix):
            text = text[len(prefix):]
        if suffix and suffix in text:
            text = text[: text.find(suffix)]
        return ReverseQuery(text=text.strip(), tokens=ids, logprob=logprob, finish_reason=finish)


def make_reverse_generator(
    lm: LanguageModel,
    *,
    reverse_lm: ReverseModel | LanguageModel | None = None,
    chat: bool = False,
    template: Template | None = None,
    **settings,
) -> ReverseGenerator:
    """TRLM-Ba generation when a reverse-trained model is given, TRLM-Fo with ``lm`` otherwise."""
    rev = as_reverse_model(reverse_lm)
    if rev is not None:
        tpl = template or BA_TEMPLATE
        if not tpl.reverse_tokens:
            raise HindsightError("A reverse-trained model needs a template with reverse_tokens=True.")
        return ReverseGenerator(rev.lm, tpl, **settings)
    return ReverseGenerator(lm, template or (FO_CHAT_TEMPLATE if chat else FO_TEMPLATE), **settings)
