"""Turning the packaged GGUF file into an ordinary transformers checkpoint, once (the cache keeps the result)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from hindsight.infra import replace_dir, temp_path
from hindsight.lm.hf import quiet_offline_transformers


GGUF_LOADER = "transformers.modeling_gguf_pytorch_utils"  # its tqdm bar ignores transformers' logging switch


@contextmanager
def silent_progress_bars() -> Iterator[None]:
    """No third-party progress bars while converting: transformers' logging switch turns off its own bars,
    and the GGUF loader's direct ``tqdm`` ("Converting and de-quantizing GGUF tensors...") is disabled here."""
    quiet_offline_transformers(progress_bars=False)
    try:
        module = importlib.import_module(GGUF_LOADER)
    except ImportError:  # pragma: no cover - a transformers without GGUF support
        module = None
    original = getattr(module, "tqdm", None)
    if original is not None:
        module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            module.tqdm = original


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise a GGUF file once and save it as an ordinary checkpoint directory (atomic rename); the caller
    prints the one line that says so (no third-party progress bars)."""
    with silent_progress_bars():
        _convert_gguf(gguf_path, out_dir)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the weights are plain float now
    plain = AutoModelForCausalLM.from_config(cfg)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    tmp = temp_path(out_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    replace_dir(tmp, out_dir)
