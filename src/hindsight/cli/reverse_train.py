"""``hindsight reverse train``: reverse-order (TRLM-Ba) or two-direction (TRLM-FoBa) training."""

from __future__ import annotations

import typer

from hindsight.cli.common import JSON_OPTION, err, print_json, progress_bar
from hindsight.errors import HindsightError

reverse_app = typer.Typer(help="Time-reversed language models: training.", no_args_is_help=True)


def train(
    out: str = typer.Option(..., "--out", "-o", help="Output directory (outside the repo), e.g. /tmp/trlm/tiny-ba. "
                            "Rerunning with the same --out resumes from its newest checkpoint."),
    data: list[str] = typer.Option([], "--data", help="Training data: a .txt/.jsonl file or a local dataset name "
                                   "(scifact_corpus, rt_polarity, imdb_test_sample); repeatable."),
    preset: str = typer.Option(None, "--preset", help="A ready recipe: tiny (CPU, ~10 min) or small."),
    mode: str = typer.Option("ba", "--mode", help="ba: reversed token order; foba: both directions, alternating."),
    init: str = typer.Option(None, "--init", help="A size (tiny, small) to train from scratch, or a forward "
                             "checkpoint to start from (model name or directory)."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps."),
    seq_len: int = typer.Option(None, "--seq-len", help="Tokens per packed row."),
    batch_size: int = typer.Option(None, "--batch-size", help="Rows per micro-batch (per process)."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Save a checkpoint every K steps."),
    max_units: int = typer.Option(None, "--max-units", help="Read at most this many documents/pairs."),
    data_dir: str = typer.Option(None, "--data-dir", help="Where named datasets live (default: shared/data)."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Train a reverse model; the result lands in OUT/model, ready for --reverse-model OUT."""
    from hindsight.reverse.training import PRESETS, ReverseTrainer, TrainConfig, read_units

    settings: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise HindsightError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        settings.update(PRESETS[preset])
    given = {"data": data or None, "init": init, "steps": steps, "seq_len": seq_len, "batch_size": batch_size,
             "grad_accum": grad_accum, "lr": lr, "checkpoint_every": checkpoint_every, "max_units": max_units}
    settings.update({k: v for k, v in given.items() if v is not None})
    if not settings.get("data"):
        raise HindsightError("No training data: pass --data FILE (repeatable) or --preset tiny.")
    cfg = TrainConfig(out=out, mode=mode, seed=seed, **settings)
    with err.status("Reading and tokenising the training data..."):
        units = read_units(cfg.data, data_dir, cfg.max_units)
        trainer = ReverseTrainer(cfg, units)
    if trainer.resumed_from is not None:
        err.print(f"Resuming from {trainer.resumed_from} (step {trainer.step}).")
    n_params = sum(p.numel() for p in trainer.model.parameters())
    err.print(f"{cfg.mode} training: {n_params / 1e6:.1f}M parameters, {len(trainer.data.units)} units, "
              f"{cfg.steps} steps of {cfg.batch_size}x{cfg.grad_accum}x{cfg.seq_len} tokens.")
    last = {}
    with progress_bar(f"reverse train ({cfg.mode})", cfg.steps) as (prog, task):
        prog.update(task, completed=trainer.step)

        def on_step(info) -> None:
            last.update(step=info.step, loss=info.loss, tokens_per_s=info.tokens_per_s)
            prog.update(task, completed=info.step,
                        info=f"loss {info.loss:.3f}  {info.tokens_per_s:,.0f} tok/s  lr {info.lr:.1e}")

        model_dir = trainer.run(on_step=on_step)
    if json_out:
        print_json({"model": str(model_dir), "mode": cfg.mode, "step": trainer.step, **last})
    else:
        err.print(f"Saved the model to {model_dir} (use --reverse-model {cfg.out}).")


reverse_app.command("train")(train)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.add_typer(reverse_app, name="reverse")
