"""Command-line potential specs: ``toxicity``, ``toxicity>0.5``, ``sentiment:positive``, ``regex:PATTERN``,
``keywords:a,b``; ``A*B`` multiplies potentials and ``SPEC^beta`` tempers one.

LM-based potentials (such as ``infill:SUFFIX``) need a model and a prompt; they register a builder in
``BUILDERS`` that receives them as keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from hindsight.errors import HindsightError
from hindsight.potentials.base import Potential, Tempered

Builder = Callable[..., Potential]


def _toxicity(arg: str, **_: object) -> Potential:
    from hindsight.potentials.classifiers import Toxicity

    if arg.startswith(">"):
        return Toxicity(threshold=_number(arg[1:], "toxicity threshold"))
    if arg == "low":
        return Toxicity(invert=True)
    if arg:
        raise HindsightError(f"Unknown toxicity option {arg!r}; use toxicity, toxicity>0.5 or toxicity:low.")
    return Toxicity()


def _sentiment(arg: str, **_: object) -> Potential:
    from hindsight.potentials.classifiers import Sentiment

    target, _, mode = (arg or "positive").partition(":")
    return Sentiment(target, hard=mode == "hard")


def _regex(arg: str, **_: object) -> Potential:
    from hindsight.potentials.text import Regex

    return Regex(arg)


def _keywords(arg: str, **_: object) -> Potential:
    from hindsight.potentials.text import Keywords

    return Keywords(arg.split(","))


def _infill(arg: str, **context: object) -> Potential:
    from hindsight.potentials.infill import Infill

    lm, prompt_ids = context.get("lm"), context.get("prompt_ids")
    if lm is None or prompt_ids is None:
        raise HindsightError("The infill potential needs a model and a prompt (this command does not provide them).")
    if not arg:
        raise HindsightError('infill needs a suffix, e.g. infill:" and they lived happily ever after."')
    return Infill(lm, prompt_ids, arg)


def _harmless(arg: str, **_: object) -> Potential:
    from hindsight.potentials.harmless import HarmlessClassifier, classifier_path

    return HarmlessClassifier.load(classifier_path(arg or "search"))


BUILDERS: dict[str, Builder] = {
    "toxicity": _toxicity,
    "sentiment": _sentiment,
    "regex": _regex,
    "keywords": _keywords,
    "infill": _infill,
    "harmless": _harmless,
}


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise HindsightError(f"The {what} must be a number (got {text!r}).") from None


_LITERAL = ("regex:", "infill:")  # kinds whose argument is taken verbatim (may contain * or ^)


def _split(spec: str) -> tuple[str, object]:
    """One level of the grammar: ("product", parts) | ("tempered", (inner, exponent)) | (kind, argument)."""
    spec = spec.strip()
    if not spec:
        raise HindsightError("The potential spec is empty.")
    if "*" in spec and not spec.startswith(_LITERAL):
        return "product", spec.split("*")
    m = re.fullmatch(r"(.+)\^([0-9.eE+-]+)", spec)
    if m and not spec.startswith(_LITERAL):
        return "tempered", (m.group(1), _number(m.group(2), "tempering exponent"))
    head = re.match(r"[a-z_-]+", spec)
    name = head.group(0) if head else ""
    arg = spec[len(name):]
    arg = arg[1:] if arg.startswith(":") else arg
    if name not in BUILDERS:
        raise HindsightError(f"Unknown potential {spec!r}; known kinds: {', '.join(sorted(BUILDERS))}.")
    return name, arg


def check_spec(spec: str) -> None:
    """Check a spec's grammar and kinds without building anything (no classifier or model is loaded)."""
    kind, arg = _split(spec)
    if kind == "product":
        for part in arg:  # type: ignore[union-attr]
            check_spec(part)
    elif kind == "tempered":
        check_spec(arg[0])  # type: ignore[index]


def parse_potential(spec: str, **context: object) -> Potential:
    """Build a potential from its spec. ``context`` (e.g. ``lm=``, ``prompt_ids=``) reaches LM-based builders."""
    kind, arg = _split(spec)
    if kind == "product":
        from hindsight.potentials.base import Product

        return Product([parse_potential(part, **context) for part in arg])  # type: ignore[union-attr]
    if kind == "tempered":
        inner, exponent = arg  # type: ignore[misc]
        return Tempered(parse_potential(inner, **context), exponent)
    return BUILDERS[kind](arg, **context)  # type: ignore[arg-type]
