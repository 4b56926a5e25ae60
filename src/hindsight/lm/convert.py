"""Turning the packaged GGUF file into an ordinary transformers checkpoint, once (the cache keeps the result)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from hindsight.infra import replace_dir, temp_path
from hindsight.lm.hf import quiet_offline_transformers


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise a GGUF file once and save it as an ordinary checkpoint directory (atomic rename)."""
    quiet_offline_transformers(progress_bars=False)  # our own progress line says what is happening
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
