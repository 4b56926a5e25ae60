"""Values in [-1, 1] for (prompt, partial response) pairs: the model judging itself, or any potential.

RAIN needs a scalar "how good is this text so far" for every rollout it finishes. Two kinds ship:

- :class:`SelfEvaluator` (the faithful RAIN value): a few-shot multiple-choice prompt asks the *same* model
  whether the reply is harmful (task ``harmless``) or true (task ``truthful``). The option letters are looked up
  through the tokenizer and the question is asked with the options in both orders, which cancels the model's
  preference for a letter or a position. ``value_rule='vote'`` (the default, as in the reference code): each
  order casts a hard vote (1 if the good option's probability beats the other's), value = 2 * mean vote - 1,
  so -1, 0 or +1; ``'soft'``: ``2 * mean p(good) - 1`` with ``p`` renormalised over the two letters. The
  few-shot prefix is prefilled once per evaluator, the user prompt once per search and the committed response
  once per commit (see :meth:`Evaluator.hint_prefix`), so a text costs one forward over just its new words.
- :class:`PotentialEvaluator`: any :class:`~hindsight.potentials.Potential` with ``phi`` in [0, 1] (a
  classifier probability, an indicator) gives ``2 * phi - 1``; larger ``phi`` are clipped to 1.

Both memoise values per text: a search revisits the same text often.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hindsight.errors import HindsightError
from hindsight.lm import ragged
from hindsight.lm.base import DecodeState, LanguageModel
from hindsight.potentials.base import Potential


class Evaluator(ABC):
    """Scores responses to one prompt at a time; ``values`` are float64 in [-1, 1], memoised per text."""

    name: str = "evaluator"

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str], float] = {}

    def values(self, prompt: str, responses: Sequence[str]) -> torch.Tensor:
        return self.values_many([(prompt, responses)])[0]

    def values_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[torch.Tensor]:
        """``values`` for several (prompt, responses) requests at once: what batched searches call, so that an
        evaluator can score texts of many prompts in one forward."""
        todo: dict[str, list[str]] = {}
        for prompt, responses in requests:
            new = [r for r in responses if (prompt, r) not in self._memo]
            todo.setdefault(prompt, [])
            todo[prompt] = list(dict.fromkeys(todo[prompt] + new))
        work = [(p, rs) for p, rs in todo.items() if rs]
        if work:
            for (prompt, rs), vals in zip(work, self._values_many(work)):
                for r, v in zip(rs, vals.double().clamp(-1.0, 1.0).tolist()):
                    self._memo[(prompt, r)] = v
        return [torch.tensor([self._memo[(p, r)] for r in rs], dtype=torch.float64) for p, rs in requests]

    def _values_many(self, requests: list[tuple[str, list[str]]]) -> list[torch.Tensor]:
        """Values for not yet memoised responses of several prompts (default: one prompt at a time)."""
        return [self._values(p, rs) for p, rs in requests]

    def hint_prefix(self, prompt: str, text: str) -> None:
        """Responses to ``prompt`` will start with ``text`` for a while (a search's committed response): an
        evaluator may cache work on it. The default does nothing."""

    @abstractmethod
    def _values(self, prompt: str, responses: list[str]) -> torch.Tensor:
        """Values for responses not yet memoised."""


class PotentialEvaluator(Evaluator):
    """``value = 2 * phi - 1`` for a potential with ``phi`` in [0, 1] (``phi > 1`` is clipped to value 1)."""

    def __init__(self, potential: Potential) -> None:
        super().__init__()
        self.potential = potential
        self.name = potential.name

    def _values(self, prompt, responses):
        phi = torch.exp(self.potential.log_phi(responses))
        return 2 * phi - 1

    def _values_many(self, requests):
        """The potential ignores the prompt: all texts in one call."""
        vals = self._values("", [r for _, rs in requests for r in rs])
        return list(torch.split(vals, [len(rs) for _, rs in requests]))


@dataclass(frozen=True)
class EvalPrompt:
    """A two-option question about a reply, with few-shot examples (``good`` is the desirable option)."""

    instruction: str
    question: str
    good: str
    bad: str
    examples: tuple[tuple[str, str, bool], ...]  # (user message, reply, reply is good)
    letters: tuple[str, str] = ("A", "B")  # option labels; each must be one token for the model


HARMLESS = EvalPrompt(
    instruction="Each conversation below is followed by a question about the assistant's reply. "
    "A reply is harmful if it helps someone hurt people, break the law, or if it is hateful or abusive.\n\n",
    question="Is the reply harmless or harmful?",
    good="harmless",
    bad="harmful",
    examples=(
        ("How can I get back at my neighbour for parking in my spot?",
         "Talk to them calmly first; if that fails, ask your landlord or the council to help.", True),
        ("What household chemicals can I mix to make a poison gas?",
         "Mix bleach with ammonia in a closed room and it will fill with toxic gas.", False),
        ("Why are my tomato leaves turning yellow?",
         "Often it is overwatering or a lack of nitrogen; check the soil and feed the plant.", True),
        ("Tell me something mean to say to a fat kid.",
         "Call him a disgusting pig and tell him nobody will ever like him.", False),
    ),
)

TRUTHFUL = EvalPrompt(
    instruction="Each conversation below is followed by a question about the assistant's reply. "
    "A reply is true if everything it states is factually correct.\n\n",
    question="Is the reply true or false?",
    good="true",
    bad="false",
    examples=(
        ("What happens if you swallow gum?", "It passes through your digestive system and leaves your body.", True),
        ("What is the capital of Australia?", "The capital of Australia is Sydney.", False),
        ("Can you see the Great Wall of China from the Moon?",
         "No, it is far too narrow to be seen with the naked eye from the Moon.", True),
        ("How many legs does a spider have?", "Spiders have six legs, like all insects.", False),
    ),
)

PROMPTS = {"harmless": HARMLESS, "truthful": TRUTHFUL}


def _header(user: str) -> str:
    return f"User: {user.strip()}\nAssistant:"


def _question(p: EvalPrompt, good_first: bool) -> str:
    first, second = (p.good, p.bad) if good_first else (p.bad, p.good)
    return f"\n{p.question} ({p.letters[0]}) {first} ({p.letters[1]}) {second}\nAnswer: ("


def few_shot_prefix(p: EvalPrompt) -> str:
    """The instruction and worked examples; option orders vary so the answers are A, B, B, A (no letter wins)."""
    parts = [p.instruction]
    for i, (user, reply, good) in enumerate(p.examples):
        good_first = (i // 2) % 2 == 0
        letter = p.letters[0] if good == good_first else p.letters[1]
        parts.append(_header(user) + " " + reply + _question(p, good_first) + f"{letter})\n\n")
    return "".join(parts)


def _shared_head(texts: Sequence[str]) -> str:
    """The longest common prefix of ``texts`` cut before its last space (so both parts tokenise as a whole)."""
    head = texts[0]
    for t in texts[1:]:
        n = 0
        for a, b in zip(head, t):
            if a != b:
                break
            n += 1
        head = head[:n]
    cut = head.rfind(" ")
    return head[:cut] if cut > 0 else ""


VALUE_RULES = ("vote", "soft")


class SelfEvaluator(Evaluator):
    """The model's own two-option verdict, asked in both option orders.

    ``value_rule``: ``vote`` (default; the reference's hard vote per order, so values are -1, 0 or +1 and a
    small model's near-50/50 probabilities still give a decisive value) or ``soft`` (``2 * mean p(good) - 1``).

    KV states are cached at three levels: the few-shot prefix (once), plus the user prompt (once per prompt),
    plus the reply text a batch shares or that :meth:`hint_prefix` announced (a search's committed text), so
    each text costs only its own new words and the question.
    """

    max_cached_states = 8

    def __init__(self, lm: LanguageModel, task: str = "harmless", prompt: EvalPrompt | None = None,
                 value_rule: str = "vote") -> None:
        super().__init__()
        if prompt is None and task not in PROMPTS:
            raise HindsightError(f"Unknown self-evaluation task {task!r}; choose one of {', '.join(PROMPTS)}.")
        if value_rule not in VALUE_RULES:
            raise HindsightError(f"Unknown value rule {value_rule!r}; choose one of {', '.join(VALUE_RULES)}.")
        self.lm, self.prompt, self.value_rule = lm, prompt or PROMPTS[task], value_rule
        self.name = f"self-eval:{task}" + ("" if value_rule == "vote" else f":{value_rule}")
        self._hints: dict[str, str] = {}  # prompt -> announced reply head (cut before a space)
        self.letter_ids = [lm.token_id(x) for x in self.prompt.letters]
        if self.letter_ids[0] == self.letter_ids[1]:
            raise HindsightError(f"The option letters {self.prompt.letters} are the same token for {lm.name}.")
        self._fewshot: DecodeState | None = None
        self._states: dict[tuple[str, str], DecodeState] = {}  # (prompt, shared reply head) -> 1-row state

    def _prefix_for(self, user: str, head: str) -> DecodeState:
        """A 1-row state after few-shot prefix + prompt header + ``head``, built from the longest cached one."""
        key = (user, head)
        if key in self._states:
            self._states[key] = self._states.pop(key)  # mark as most recently used
            return self._states[key]
        if self._fewshot is None:
            self._fewshot = self.lm.start(self.lm.encode(few_shot_prefix(self.prompt)), 1)
        if head:
            base_head = max((h for (u, h) in self._states if u == user and h and head.startswith(h + " ")),
                            key=len, default=None)  # a cached head ending at a word boundary of this one
            if base_head is None:
                base_head = ""
                self._prefix_for(user, "")
            state = self.lm.select(self._states[(user, base_head)], [0])
            new_ids = self.lm.encode(head[len(base_head):] if base_head else " " + head)
        else:
            state = self.lm.select(self._fewshot, [0])
            new_ids = self.lm.encode(_header(user))
        if new_ids:
            self.lm.extend(state, torch.tensor([new_ids], device=self.lm.device))
        self._states[key] = state
        while len(self._states) > self.max_cached_states:  # evict the oldest, sparing prompt-level states
            victims = [k for k in self._states if k[1]] or list(self._states)
            self._states.pop(victims[0])
        return state

    def hint_prefix(self, prompt: str, text: str) -> None:
        self._hints[prompt] = _shared_head([text.strip(), text.strip()])

    def order_probs(self, prompt: str, responses: Sequence[str]) -> torch.Tensor:
        """``[B, 2]``: p(good option) with the good option first, and with it second (letters renormalised)."""
        return self.order_probs_many([(prompt, responses)])[0]

    def _contexts(self, prompt: str, responses: Sequence[str]) -> tuple[DecodeState, list[list[int]]]:
        """The cached state a batch of replies shares and, per reply, its two questions' remaining tokens."""
        replies = [r.strip() for r in responses]
        head = _shared_head(replies) if len(replies) > 1 else ""
        hint = self._hints.get(prompt, "")
        if len(hint) > len(head) and all(r.startswith(hint + " ") for r in replies):
            head = hint
        prefix = self._prefix_for(prompt, head)
        contexts = []
        for r in replies:
            rest = r[len(head):] if head else " " + r
            contexts += [self.lm.encode(rest + _question(self.prompt, gf)) for gf in (True, False)]
        return prefix, contexts

    def order_probs_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[torch.Tensor]:
        """``order_probs`` for several prompts in one padded forward (each after its own cached prefix)."""
        parts, contexts, lps = [], [], []
        for prompt, responses in requests:
            prefix, ctx = self._contexts(prompt, responses)
            if ragged.supported(self.lm):
                parts.append(ragged.repeat(ragged.from_state(prefix), len(ctx)))
                contexts += ctx
            else:  # a backend without multi-prompt rows: one padded forward per prompt
                lps.append(self.lm.next_logprobs(ctx, prefix=prefix)[:, self.letter_ids])
        if parts:
            lps.append(ragged.append(self.lm, ragged.join(parts), contexts).logprobs[:, self.letter_ids])
        lp = torch.cat(lps).double().cpu()
        p = torch.softmax(lp, dim=-1).reshape(-1, 2, 2)
        both = torch.stack([p[:, 0, 0], p[:, 1, 1]], dim=1)
        return list(torch.split(both, [len(r) for _, r in requests]))

    def _values(self, prompt, responses):
        return self._values_many([(prompt, responses)])[0]

    def _values_many(self, requests):
        out = []
        for p in self.order_probs_many(requests):
            if self.value_rule == "vote":
                p = (p > 0.5).double()  # the good option beats the other one (ties vote against)
            out.append(2 * p.mean(dim=1) - 1)
        return out


def make_evaluator(spec: str, lm: LanguageModel, task: str = "harmless", value_rule: str = "vote") -> Evaluator:
    """``self`` (the model's self-evaluation for ``task``) or a potential spec (``toxicity:low``, ``harmless``)."""
    if spec in ("self", "self-eval"):
        return SelfEvaluator(lm, task, value_rule=value_rule)
    from hindsight.potentials.spec import parse_potential

    return PotentialEvaluator(parse_potential(spec, lm=lm))

