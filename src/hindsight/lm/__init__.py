"""Language-model backends. This package is the only code that imports transformers.

``load_model(name_or_path)`` returns a :class:`LanguageModel`; ``hindsight.lm.toy`` builds tiny models for
tests, including one small enough that every sequence can be enumerated.
"""

from __future__ import annotations

from hindsight.lm.base import Counters, DecodeState, LanguageModel, Sample, check_sampling_args
from hindsight.lm.registry import DEFAULT_MODEL, Progress, resolve

__all__ = [
    "DEFAULT_MODEL",
    "Counters",
    "DecodeState",
    "LanguageModel",
    "Sample",
    "check_sampling_args",
    "load_model",
]

_loaded: dict[tuple[str, str | None, str | None], LanguageModel] = {}


def load_model(
    name_or_path: str | None = None,
    *,
    device: str | None = None,
    progress: Progress | None = None,
    reuse: bool = True,
    name: str | None = None,
) -> LanguageModel:
    """A known model name (default ``smollm2-135m``) or a local transformers checkpoint directory.

    Known models are obtained and converted on first use (``progress`` hears what is happening); the same
    model asked for twice in one process is loaded once unless ``reuse=False``. ``name`` overrides the name
    the model reports (e.g. a training run's name for its ``model`` directory).
    """
    key = (str(name_or_path or DEFAULT_MODEL), device, name)
    if reuse and key in _loaded:
        return _loaded[key]
    known, path = resolve(name_or_path, progress)
    from hindsight.lm.threads import configure_threads

    configure_threads()
    if progress:
        progress(f"Loading {known}")
    from hindsight.lm.hf import load_checkpoint

    lm = load_checkpoint(path, name=name or known, device=device)
    if lm.device.type == "cpu":  # small-batch forwards 1.4-2x as fast (see cpu_layout)
        from hindsight.lm.cpu_layout import pack_linear_weights, transpose_linear_weights

        transpose_linear_weights(lm.model)
        pack_linear_weights(lm.model)
    if reuse:
        _loaded[key] = lm
    return lm
