"""Reverse-order training: TRLM-Ba (every example's token ids reversed) and TRLM-FoBa (forward and reversed
examples alternating, each behind a direction tag), from scratch or from a forward checkpoint.

Data are *units* (a document or a (query, response) pair) packed into rows by :mod:`hindsight.reverse.packing`.

A checkpoint directory holds the model and tokenizer (``save_pretrained``), ``trainer_state.pt`` (optimizer,
step, data position, RNG states) and ``hindsight_reverse.json`` (mode, tags, config); it is written aside and
renamed into place. Multi-GPU runs go through ``accelerate`` (``accelerate launch -m hindsight reverse train``).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.infra import replace_dir, temp_path
from hindsight.reverse.models import FORWARD_TAG, META_FILE, MODES, REVERSE_TAG
from hindsight.reverse.packing import PackedData, Unit, read_units, unit_ids  # noqa: F401  (re-exported)

STATE_FILE = "trainer_state.pt"


@dataclass
class TrainConfig:
    """Everything that decides a run; saved with each checkpoint and checked on resume."""

    out: str
    data: list[str] = field(default_factory=list)  # files (.txt / .jsonl) or local dataset names
    mode: str = "ba"
    init: str = "tiny"  # a size preset (tiny, small) or a forward checkpoint (model name or directory)
    tokenizer: str | None = None  # where a from-scratch model's tokenizer comes from (default model)
    seq_len: int = 128
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    warmup: int = 20
    steps: int = 200
    checkpoint_every: int = 50
    keep: int = 2
    seed: int = 0
    forward_tag: str = FORWARD_TAG
    reverse_tag: str = REVERSE_TAG
    max_units: int | None = None  # cap on units read (quick runs)


# Recipes that train in minutes on a CPU, on the local datasets (never on the claims or AlpacaEval outputs
# that the evaluations score).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"init": "tiny", "data": ["scifact_corpus", "rt_polarity", "imdb_test_sample"], "seq_len": 128,
             "batch_size": 8, "grad_accum": 1, "lr": 2e-3, "warmup": 30, "steps": 300, "checkpoint_every": 100},
    "small": {"init": "small", "data": ["scifact_corpus", "rt_polarity", "imdb_test_sample"], "seq_len": 256,
              "batch_size": 16, "grad_accum": 2, "lr": 1e-3, "warmup": 100, "steps": 3000,
              "checkpoint_every": 250},
}


# ---- the loop ---------------------------------------------------------------------------------------------
@dataclass
class StepInfo:
    step: int
    steps: int
    loss: float
    tokens_per_s: float
    lr: float


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak (a function of the step alone)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class ReverseTrainer:
    """Trains one model; ``run`` resumes from the newest checkpoint under ``cfg.out`` when there is one.

    ``model``/``tokenizer`` may be given in memory (tests); otherwise they come from ``cfg.init``.
    """

    def __init__(self, cfg: TrainConfig, units: Sequence[Unit], *, model=None, tokenizer=None,
                 accelerate: bool | None = None) -> None:
        from hindsight.lm import train as lmtrain

        if cfg.mode not in MODES:
            raise HindsightError(f"Unknown training mode {cfg.mode!r}; choose one of {', '.join(MODES)}.")
        for name in ("steps", "batch_size", "grad_accum", "seq_len", "checkpoint_every"):
            if getattr(cfg, name) < 1:
                raise HindsightError(f"--{name.replace('_', '-')} must be at least 1.")
        self.cfg, self.lmtrain = cfg, lmtrain
        self.out = Path(cfg.out)
        self.step = 0
        resume = self.latest_checkpoint()
        if resume is not None:
            model, tokenizer = lmtrain.load_model_for_training(resume)
            saved = json.loads((resume / META_FILE).read_text())["config"]
            for key in ("mode", "data", "max_units", "seq_len", "seed", "forward_tag", "reverse_tag"):
                if saved[key] != getattr(cfg, key):
                    raise HindsightError(f"{self.out} holds a run with {key}={saved[key]!r}, not "
                                         f"{getattr(cfg, key)!r}; use another --out or the same settings.")
        elif model is None:
            model, tokenizer = self._initial_model(cfg)
        self.acc = _accelerator(accelerate)
        device = self.acc.device if self.acc else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer
        self.lm = lmtrain.as_language_model(model.to(device), tokenizer)
        self.model = model
        self.data = PackedData(self.lm, units, cfg)
        torch.manual_seed(cfg.seed)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
        if resume is not None:
            state = torch.load(resume / STATE_FILE, weights_only=False)
            self.opt.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.data.load_state(state["data"])
            _set_rng_state(state["rng"])
            self.resumed_from: Path | None = resume
        else:
            self.resumed_from = None
        if self.acc:
            self.model, self.opt = self.acc.prepare(self.model, self.opt)

    @staticmethod
    def _initial_model(cfg: TrainConfig):
        from hindsight.lm import registry, train as lmtrain

        if cfg.init in lmtrain.SIZES:
            _, tok_dir = registry.resolve(cfg.tokenizer)
            tok = lmtrain.load_tokenizer(tok_dir)
            return lmtrain.new_model(cfg.init, tok, seed=cfg.seed), tok
        _, path = registry.resolve(cfg.init)
        return lmtrain.load_model_for_training(path)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        root = self.out / "checkpoints"
        return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []

    def latest_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1] if cps else None

    def _unwrapped(self):
        return self.acc.unwrap_model(self.model) if self.acc else self.model

    def meta(self) -> dict[str, Any]:
        return {"mode": self.cfg.mode, "forward_tag": self.cfg.forward_tag, "reverse_tag": self.cfg.reverse_tag,
                "step": self.step, "config": asdict(self.cfg)}

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` aside and rename it into place; keep the newest ``keep``."""
        if self.acc and not self.acc.is_main_process:
            return self.out
        target = self.out / "checkpoints" / f"step-{self.step:07d}"
        tmp = temp_path(target)
        self.lmtrain.save_model(self._unwrapped(), self.tokenizer, tmp)
        torch.save({"optimizer": self.opt.state_dict(), "step": self.step, "data": self.data.state(),
                    "rng": _rng_state()}, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(self.meta(), indent=2))
        replace_dir(tmp, target)
        for old in self.checkpoints()[: -self.cfg.keep]:
            shutil.rmtree(old)
        return target

    def save_final(self) -> Path:
        """The trained model, ready for ``--reverse-model``: ``<out>/model``."""
        target = self.out / "model"
        if self.acc and not self.acc.is_main_process:
            return target
        tmp = temp_path(target)
        self.lmtrain.save_model(self._unwrapped(), self.tokenizer, tmp)
        (tmp / META_FILE).write_text(json.dumps(self.meta(), indent=2))
        replace_dir(tmp, target)
        return target

    # ---- training ---------------------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, int]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (mean loss, tokens trained on)."""
        cfg, model = self.cfg, self.model
        model.train()
        world = self.acc.num_processes if self.acc else 1
        rank = self.acc.process_index if self.acc else 0
        lr = learning_rate(cfg, self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        total, tokens = 0.0, 0
        device = self.lm.device
        for _ in range(cfg.grad_accum):
            ids, mask = self.data.batch(cfg.batch_size * world)  # every rank draws the same global batch
            ids, mask = ids[rank::world].to(device), mask[rank::world].to(device)
            loss, n = self.lmtrain.causal_lm_loss(model, ids, mask)
            loss = loss / cfg.grad_accum
            if self.acc:
                self.acc.backward(loss)
            else:
                loss.backward()
            total += float(loss.detach())
            tokens += n * world
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        model.eval()
        return total, tokens

    def run(self, steps: int | None = None, on_step: Callable[[StepInfo], None] | None = None) -> Path:
        """Train up to ``steps`` (default ``cfg.steps``) total steps, checkpointing every K; returns the model dir.

        Interrupting loses at most the steps since the last checkpoint; rerunning resumes from it.
        """
        until = min(steps if steps is not None else self.cfg.steps, self.cfg.steps)
        while self.step < until:
            t0 = time.perf_counter()
            loss, tokens = self.train_step()
            dt = max(time.perf_counter() - t0, 1e-9)
            info = StepInfo(self.step, self.cfg.steps, loss, tokens / dt, learning_rate(self.cfg, self.step - 1))
            self._log(info)
            if self.step % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if on_step:
                on_step(info)
        if self.step >= self.cfg.steps:
            return self.save_final()
        return self.out

    def _log(self, info: StepInfo) -> None:
        """One line per step in ``<out>/train_log.jsonl`` (a resumed run appends after its checkpoint)."""
        if self.acc and not self.acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": info.step, "loss": round(info.loss, 4),
                                "tokens_per_s": round(info.tokens_per_s, 1), "lr": info.lr}) + "\n")

    def eval_loss(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Mean loss over given batches (no gradient), for checks that training helps."""
        losses = []
        with torch.no_grad():
            for ids, mask in batches:
                loss, _ = self.lmtrain.causal_lm_loss(self.model, ids.to(self.lm.device), mask.to(self.lm.device))
                losses.append(float(loss))
        return sum(losses) / len(losses)


def _accelerator(flag: bool | None):
    """An ``accelerate.Accelerator`` for multi-process runs (or when asked); None keeps the plain loop."""
    if flag is None:
        flag = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not flag:
        return None
    try:
        from accelerate import Accelerator
    except ImportError:
        raise HindsightError("Multi-process training needs the 'accelerate' package (pip install accelerate).") from None
    return Accelerator()
