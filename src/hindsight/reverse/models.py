"""One reverse-model type, loaded one way: a language model plus the direction it was trained in and its tags.

A model trained by ``hindsight reverse train`` records its mode (``ba``: reversed token order; ``foba``: both
directions behind a tag) and its direction tags in ``hindsight_reverse.json``; every command loads it through
:func:`load_reverse_model`, and scorers and generators take the :class:`ReverseModel` explicitly (nothing is
stored on the language model, which may be shared through the model cache).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hindsight.errors import HindsightError
from hindsight.lm import LanguageModel, load_model
from hindsight.lm.registry import Progress

FORWARD_TAG, REVERSE_TAG = "<fwd>", "<rev>"  # default direction tags of FoBa models
MODES = ("ba", "foba")
META_FILE = "hindsight_reverse.json"


@dataclass(frozen=True)
class ReverseModel:
    """A model that reads text in reverse token order. ``mode`` is None when it was not recorded (a plain
    checkpoint): then any reverse scorer may use it."""

    lm: LanguageModel
    mode: str | None = None
    forward_tag: str = FORWARD_TAG
    reverse_tag: str = REVERSE_TAG

    @property
    def name(self) -> str:
        return self.lm.name

    def check_mode(self, scorer: str) -> None:
        """One sentence when a ``trlm-ba`` / ``trlm-foba`` scorer does not match how the model was trained."""
        if self.mode is not None and self.mode != scorer.removeprefix("trlm-"):
            raise HindsightError(f"The reverse model was trained in {self.mode} mode; use scorer trlm-{self.mode}.")


def as_reverse_model(model: ReverseModel | LanguageModel | None) -> ReverseModel | None:
    """A :class:`ReverseModel` as given, or a plain language model taken as one (mode unknown, default tags)."""
    if model is None or isinstance(model, ReverseModel):
        return model
    return ReverseModel(model)


def resolve_reverse_dir(path: str | Path) -> Path:
    """A trained reverse model directory: the path itself, ``<path>/model`` for a training output directory, or
    its newest checkpoint."""
    p = Path(path).expanduser()
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    cps = sorted((p / "checkpoints").glob("step-*")) if (p / "checkpoints").is_dir() else []
    if cps:
        return cps[-1]
    raise HindsightError(f"The reverse model {path} is not a trained model directory (no config.json found).")


def load_reverse_model(spec: str | Path, device: str | None = None, *, progress: Progress | None = None
                       ) -> ReverseModel:
    """Load a reverse-trained model (a training output directory or a checkpoint) with its mode and tags."""
    d = resolve_reverse_dir(spec)
    run_name = d.parent.name if d.name == "model" else d.name  # the run's name, not "model"
    meta_path = d / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    lm = load_model(str(d), device=device, progress=progress, name=run_name)
    return ReverseModel(lm, meta.get("mode"), meta.get("forward_tag", FORWARD_TAG),
                        meta.get("reverse_tag", REVERSE_TAG))
