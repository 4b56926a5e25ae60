"""The transformers side of training: build a model from a size preset or a checkpoint, compute the causal-LM
loss, save a checkpoint directory. Training loops live above (``hindsight.reverse.training``) and only see
``torch.nn.Module`` objects and the :class:`HFLanguageModel` made from them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hindsight.errors import HindsightError
from hindsight.infra import replace_dir, temp_path
from hindsight.lm.hf import HFLanguageModel, quiet_offline_transformers

# Model sizes for training from scratch (Llama blocks; the vocabulary comes from the tokenizer used).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 512},
    "small": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 6,
              "num_key_value_heads": 2, "max_position_embeddings": 1024},
}


def load_tokenizer(path: str | Path):
    try:
        return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise HindsightError(f"Could not load a tokenizer from {path}: {str(e).splitlines()[0]}") from None


def new_model(size: str, tokenizer, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised Llama of a named size over ``tokenizer``'s vocabulary."""
    if size not in SIZES:
        raise HindsightError(f"Unknown model size {size!r}; choose one of {', '.join(SIZES)}.")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    cfg = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, eos_token_id=eos, pad_token_id=pad,
                      bos_token_id=tokenizer.bos_token_id, attn_implementation="sdpa", **SIZES[size])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = eos
    return model


def load_model_for_training(path: str | Path) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) from a local checkpoint directory, in float32 for training."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise HindsightError(f"{path} is not a transformers checkpoint directory (it has no config.json).")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, load_tokenizer(path)


def causal_lm_loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the real (unpadded) positions, and how many there were."""
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    return out.loss, int((mask[:, 1:] * mask[:, :-1]).sum())


def save_model(model: torch.nn.Module, tokenizer, out_dir: str | Path) -> None:
    """Save model + tokenizer so that readers see a whole directory or none (write aside, then rename)."""
    out_dir = Path(out_dir)
    tmp = temp_path(out_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    quiet_offline_transformers()  # a checkpoint every K steps: its bars would drown the training bar
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir)


def as_language_model(model: torch.nn.Module, tokenizer, name: str = "training") -> HFLanguageModel:
    """Wrap a model being trained for scoring (it shares the weights; call ``model.train()`` after)."""
    lm = HFLanguageModel(model, tokenizer, name=name, device=next(model.parameters()).device)
    return lm
