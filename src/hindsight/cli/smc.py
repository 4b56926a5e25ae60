"""``hindsight smc``, ``hindsight twist train`` and ``hindsight bounds``: twisted SMC from the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from rich.table import Table

from hindsight.api import SMCRequest
from hindsight.cli.common import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, SEED_OPTION, err, execute_with_progress,
                                  get_model,
                                  num, out, print_json, progress_bar)
from hindsight.cli.scale import GPUS_OPTION, RAY_ADDRESS_OPTION, WORKERS_OPTION, scale_of
from hindsight.errors import HindsightError
from hindsight.records.lock import lock_results
from hindsight.records.results import ResultFile

twist_app = typer.Typer(help="Learned twists for twisted SMC.", no_args_is_help=True)

POTENTIAL_OPTION = typer.Option(
    ..., "--potential", "-p", help="toxicity | toxicity>0.5 | sentiment:positive | infill:SUFFIX | regex:PATTERN ..."
)
RAW_OPTION = typer.Option(False, "--raw", help="Use the prompt as plain text, without the chat template.")
MAX_TOKENS_OPTION = typer.Option(20, "--max-tokens", help="New tokens per completion at most.")
MIN_TOKENS_OPTION = typer.Option(0, "--min-tokens", help="Restrict the target to completions at least this long.")
RESAMPLE_OPTION = typer.Option("systematic", "--resample", help="multinomial | stratified | systematic | residual.")
ESS_OPTION = typer.Option(0.5, "--ess-threshold", help="Resample when ESS/N falls below this (1: every step, 0: never).")


def _setup(model, device, prompt, raw, potential):
    from hindsight.potentials import parse_potential

    lm = get_model(model, device)
    ids = lm.prompt_ids(prompt, use_chat=not raw)
    return lm, ids, parse_potential(potential, lm=lm, prompt_ids=ids)


def _load_twist(path: Path | None, lm):
    if path is None:
        return None
    from hindsight.twists.checkpoint import load_twist

    return load_twist(path, device=lm.device, lm=lm)[0]


def smc(
    prompt: str = typer.Argument(..., help="The prompt (chat template applied unless --raw)."),
    potential: str = POTENTIAL_OPTION,
    particles: int = typer.Option(16, "--particles", "-n", help="Number of particles (they share the prompt's cache)."),
    max_tokens: int = MAX_TOKENS_OPTION,
    twist: Path = typer.Option(None, "--twist", help="A twist file from `hindsight twist train` (else bootstrap SMC)."),
    resample: str = RESAMPLE_OPTION,
    ess_threshold: float = ESS_OPTION,
    min_tokens: int = MIN_TOKENS_OPTION,
    raw: bool = RAW_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    seed: int = SEED_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Sample from p(x | prompt) * phi(x) with (twisted) sequential Monte Carlo."""
    res = execute_with_progress(SMCRequest(prompt=prompt, potential=potential, particles=particles,
                                           max_tokens=max_tokens, twist=str(twist) if twist else None,
                                           resample=resample, ess_threshold=ess_threshold, min_tokens=min_tokens,
                                           raw=raw, seed=seed, model=model), device, "smc", json_out)
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{res['sampler']} SMC, {particles} particles, {res['potential']}: "
                        f"log Z-hat = {num(res['log_z'])}, {res['seconds']:.1f}s, resampled {res['resampled']}x")
    for col, just in (("#", "right"), ("weight", "right"), ("log phi", "right"), ("text", "left")):
        table.add_column(col, justify=just)
    samples = res["samples"]
    for i in sorted(range(len(samples)), key=lambda i: -(samples[i]["weight"] or 0.0)):
        table.add_row(str(i), num(samples[i]["weight"]), num(samples[i]["log_phi"], ".2f"), samples[i]["text"])
    out.print(table)
    out.print(f"ESS per step: {' '.join(f'{e:.1f}' for e in res['ess'])}")


def _resume(out_path: Path, lm, meta: dict):
    """(head, optimizer state, history) of a twist file trained for the same model, prompt and potential."""
    from hindsight.twists.checkpoint import load_twist
    from hindsight.twists.train import History

    head, old, opt_state = load_twist(out_path, device=lm.device, lm=lm)
    for key in ("model", "prompt", "potential"):
        if old.get(key) != meta[key]:
            raise HindsightError(f"{out_path} was trained with {key} {old.get(key)!r}, not {meta[key]!r}; "
                                 "use --fresh to overwrite it.")
    history = History(**old["history"])
    err.print(f"resuming {out_path} from step {history.steps[-1] if history.steps else 0}")
    return head, opt_state, history


def train(
    potential: str = POTENTIAL_OPTION,
    prompt: str = typer.Option(..., "--prompt", help="The prompt the twist is trained for."),
    out_path: Path = typer.Option(..., "--out", help="Twist file to write (resumed if it exists)."),
    method: str = typer.Option("ctl", "--method", help="ctl (contrastive twist learning) or fudge (baseline)."),
    head_kind: str = typer.Option("linear", "--head",
                                  help="linear, mlp (3 layers) or tied (scores tokens through the LM's embeddings)."),
    rank: int = typer.Option(64, "--rank", help="Rank of a tied head."),
    memory: bool = typer.Option(False, "--memory",
                                help="Tied head: also score the completion so far (a saturating sum over its "
                                     "tokens), so a rewarded word keeps its credit after it is written."),
    steps: int = typer.Option(200, "--steps", help="Gradient steps in total (a resumed run continues to this)."),
    batch: int = typer.Option(64, "--batch", help="Completions drawn per round (with --proposal pool: the pool)."),
    inner: int = typer.Option(4, "--inner", help="Gradient steps per drawn batch."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate (paper: 1e-4 toxicity, 3e-5 classifier)."),
    proposal: str = typer.Option("twist", "--proposal",
                                 help="twist (on-policy), model (fresh model samples each round) or pool "
                                      "(one pool of --batch model samples, every step on all of it)."),
    buffer: int = typer.Option(0, "--buffer", help="With model proposals: draw this many batches once, then replay."),
    vocab_rows: int = typer.Option(64, "--vocab-rows",
                                   help="With --proposal pool: pool rows whose CTL normaliser sums over the whole "
                                        "vocabulary (0: sampled tokens only)."),
    vocab_batch: int = typer.Option(32, "--vocab-batch", help="How many of those rows each gradient step uses."),
    holdout: float = typer.Option(0.0, "--holdout",
                                  help="With --proposal pool: share of the pool held out; the head with the lowest "
                                       "held-out loss (measured after every round) is the one kept."),
    max_tokens: int = MAX_TOKENS_OPTION,
    min_tokens: int = MIN_TOKENS_OPTION,
    plot: Path = typer.Option(None, "--plot", help="Training-curve PNG (default: next to --out)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over even if --out exists."),
    raw: bool = RAW_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Train a twist head on the frozen model (saved after every batch; rerun to resume)."""
    from hindsight.samplers.smc import trace_drawer
    from hindsight.twists.checkpoint import save_twist
    from hindsight.twists.heads import make_head
    from hindsight.twists.train import History, TrainConfig, plot_history, train_twist

    cfg = TrainConfig(method=method, steps=steps, batch=batch, inner=inner, lr=lr, max_tokens=max_tokens,
                      min_tokens=min_tokens, proposal="model" if method == "fudge" and proposal == "twist" else proposal,
                      vocab_rows=vocab_rows, vocab_batch=vocab_batch, holdout=holdout)
    cfg.check()
    lm, ids, pot = _setup(model, device, prompt, raw, potential)
    meta = {"model": lm.name, "prompt": prompt, "raw": raw, "potential": potential, "config": cfg.__dict__,
            "seed": seed}
    if out_path.exists() and not fresh:
        head, opt_state, history = _resume(out_path, lm, meta)
    else:
        if memory and head_kind != "tied":
            raise HindsightError("--memory needs --head tied.")
        extra = {"rank": rank, "memory": memory} if head_kind == "tied" else {}
        head = make_head(head_kind, lm.hidden_size, lm.vocab_size, bounded=method == "fudge", **extra)
        head, opt_state, history = head.to(lm.device).attach(lm), None, History()
    plot_path = plot or out_path.with_suffix(".png")

    def save(step, opt, hist):
        save_twist(out_path, head, {**meta, "step": step, "history": hist.as_dict()}, opt.state_dict())

    done = history.steps[-1] if history.steps else 0
    with progress_bar(f"twist {method}", steps) as (prog, task):
        prog.update(task, completed=done)

        def on_step(step, loss):
            prog.update(task, completed=step, info=f"loss {loss:.4f}")

        draw = trace_drawer(lm, ids, pot, max_tokens, min_tokens=min_tokens, buffer=buffer)
        history = train_twist(head, cfg, draw, optimizer_state=opt_state, history=history, seed=seed, on_step=on_step,
                              on_round=save, logprobs_from_hidden=lm.logprobs_from_hidden)
    plot_history(history, str(plot_path), title=f"{method} twist, {pot.name}")
    kept = (f"; kept the head of step {history.best_step} (held-out loss {min(history.val_loss):.4f})"
            if history.val_loss else "")
    out.print(f"wrote {out_path} ({len(history.loss)} steps, last loss {history.loss[-1]:.4f}{kept}) and {plot_path}")


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HindsightError(f"{what} must be comma-separated integers (got {text!r}).") from None
    if not vals:
        raise HindsightError(f"{what} is empty.")
    return vals


def _run_tags(settings: dict, files: dict, names: list[str]) -> tuple[str, str, dict[str, str]]:
    """Cache keys of the recorded runs: what every run, the exact samples and each sampler's runs depend on."""

    def fingerprint(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

    tag = fingerprint(settings)  # every run depends on these (not on --seeds: more seeds reuse the runs recorded)
    target = {k: settings[k] for k in ("model", "weights", "prompt", "raw", "potential", "max_tokens", "min_tokens")}
    reference_tag = fingerprint(target)  # the exact samples depend on the target only ...
    sampler_tags = {k: fingerprint([str(files[k]), files[k].stat().st_mtime]) if files[k] is not None else ""
                    for k in names}  # ... and each sampler's runs on its own twist file only
    return tag, reference_tag, sampler_tags


def _check_bounds_args(particles, seeds, kl_samples, max_tokens, plot, samplers, twist, baseline_twist):
    """Every bounds argument checked before any model is loaded or any run starts: (counts, names, files)."""
    counts = _int_list(particles, "--particles")
    for flag_name, value in (("--seeds", seeds), ("--kl-samples", kl_samples), ("--max-tokens", max_tokens)):
        if value < 1:  # checked before any model is loaded or any run starts
            raise HindsightError(f"{flag_name} must be at least 1 (got {value}).")
    if min(counts) < 1:
        raise HindsightError(f"Every --particles value must be at least 1 (got {min(counts)}).")
    if plot is not None and plot.is_dir():
        raise HindsightError(f"--plot {plot} is a folder; give a file name such as {plot / 'bounds.png'}.")
    names = [s.strip() for s in samplers.split(",") if s.strip()]
    files = {"bootstrap": None, "twisted": twist, "baseline": baseline_twist}
    for name in names:
        if name not in files:
            raise HindsightError(f"Unknown sampler {name!r}; choose from bootstrap, twisted, baseline.")
        if name != "bootstrap" and files[name] is None:
            flag = "--twist" if name == "twisted" else "--baseline-twist"
            raise HindsightError(f"The {name} sampler needs {flag} FILE.")
    return counts, names, files


def bounds(
    potential: str = POTENTIAL_OPTION,
    prompt: str = typer.Option(..., "--prompt", help="The prompt."),
    samplers: str = typer.Option("bootstrap,twisted", "--samplers", help="Any of bootstrap, twisted, baseline."),
    twist: Path = typer.Option(None, "--twist", help="Twist file for the 'twisted' sampler."),
    baseline_twist: Path = typer.Option(None, "--baseline-twist", help="Twist file for the 'baseline' sampler."),
    particles: str = typer.Option("4,16,64", "--particles", help="Comma-separated particle counts."),
    seeds: int = typer.Option(5, "--seeds", help="Independent runs per sampler and particle count."),
    max_tokens: int = MAX_TOKENS_OPTION,
    min_tokens: int = MIN_TOKENS_OPTION,
    kl_samples: int = typer.Option(32, "--kl-samples", help="Proposal and exact samples for the KL estimates."),
    resample: str = RESAMPLE_OPTION,
    ess_threshold: float = ESS_OPTION,
    plot: Path = typer.Option(None, "--plot", help="Write a PNG of the bounds against particles."),
    results_path: Path = typer.Option(Path("runs/bounds.jsonl"), "--out",
                             help="Append-only record of every finished run; rerunning the same command resumes."),
    raw: bool = RAW_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Lower/upper bounds on log Z and KL estimates for each sampler (exact samples by rejection sampling)."""
    from hindsight.experiments.bounds import bounds as run_bounds
    from hindsight.experiments.bounds import plot_bounds
    from hindsight.experiments.runner import weights_fingerprint

    scale = scale_of(workers, ray_address, gpus_per_worker)
    counts, names, files = _check_bounds_args(particles, seeds, kl_samples, max_tokens, plot, samplers, twist,
                                              baseline_twist)
    lm, ids, pot = _setup(model, device, prompt, raw, potential)
    chosen = {name: _load_twist(files[name], lm) for name in names}
    total = len(names) * (len(counts) * seeds + 1)
    settings = {"model": lm.name, "weights": weights_fingerprint(model), "prompt": prompt, "raw": raw,
                "potential": pot.name, "max_tokens": max_tokens, "min_tokens": min_tokens, "resample": resample,
                "ess": ess_threshold}  # another model's (or retrained) weights get runs of their own

    tag, reference_tag, sampler_tags = _run_tags(settings, files, names)
    rebuild = {"model": model, "device": device, "prompt": prompt, "raw": raw, "potential": potential,
               "twist_files": {k: str(files[k]) if files[k] else None for k in names}}
    with lock_results(results_path), progress_bar("bounds", total) as (prog, task):
        executor = _executor(scale, lambda alive, n: prog.update(task, info=f"workers {alive}/{n}"))
        rep = run_bounds(lm, ids, pot, chosen, counts, seeds, max_tokens, resample=resample,
                         ess_threshold=ess_threshold, kl_samples=kl_samples, min_tokens=min_tokens,
                         on_run=lambda msg: prog.update(task, advance=1, info=msg),
                         results=ResultFile(results_path), tag=tag, sampler_tags=sampler_tags,
                         reference_tag=reference_tag, rebuild=rebuild, executor=executor)
    if json_out:
        print_json({"model": lm.name, "prompt": prompt, "potential": pot.name, "max_tokens": max_tokens,
                    **rep.as_dict()})
        if plot:
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_bounds(rep, str(plot), title=f"{pot.name}: log Z bounds ({seeds} seeds)")
        return
    table = Table(title=f"log Z bounds, {pot.name}, {seeds} seeds (mean ± 95% half-width); "
                        f"{rep.exact_samples} exact samples from {rep.model_draws} model draws")
    for col in ("sampler", "particles", "lower", "upper", "gap"):
        table.add_column(col, justify="right")
    for r in rep.rows:
        table.add_row(r.sampler, str(r.particles), f"{r.lower.mean:.3f} ± {r.lower.half_width:.3f}",
                      f"{r.upper.mean:.3f} ± {r.upper.half_width:.3f}", f"{r.gap:.3f}")
    out.print(table)
    kl = Table(title=f"KL estimates (log Z bracketed by [{rep.best_lower:.3f}, {rep.best_upper:.3f}])")
    for col in ("sampler", "E_q log w", "E_sigma log w", "KL(q||sigma)", "KL(sigma||q)"):
        kl.add_column(col, justify="right")
    for k in rep.kls:
        kl.add_row(k.sampler, f"{k.mean_log_w_q:.3f}", f"{k.mean_log_w_sigma:.3f}", f"{k.kl_q_sigma:.3f}",
                   f"{k.kl_sigma_q:.3f}")
    out.print(kl)
    if rep.best_upper < rep.best_lower:
        out.print("warning: the best upper bound is below the best lower bound, so the seeds are too few for these "
                  "bounds to bracket log Z; the KL estimates are not meaningful (use more --seeds).")
    if plot:  # after the tables, so a plot that cannot be written loses nothing
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_bounds(rep, str(plot), title=f"{pot.name}: log Z bounds ({seeds} seeds)")
        out.print(f"wrote {plot}")


def _executor(scale, on_status):
    """The Ray executor when ``scale`` asks for workers, else None (the runs go in this process)."""
    if not scale.distributed:
        return None
    from hindsight.distributed import ray_executor

    return ray_executor(scale, on_status=on_status)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("smc")(smc)
    app.command("bounds")(bounds)
    twist_app.command("train")(train)
    app.add_typer(twist_app, name="twist")
