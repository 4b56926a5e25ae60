"""Bidirectional bounds on ``log Z`` and the KL estimates they give (Zhao et al., ICML 2024, section 6).

- Lower bound: ``E[log Z-hat]`` of SMC (or importance sampling) run from the proposal is ``<= log Z``.
- Upper bound: ``E[log Z-hat]`` of conditional SMC with an exact target sample clamped as one particle is
  ``>= log Z``. Exact target samples come from rejection sampling when ``phi <= 1`` (draw from the model, accept
  with probability ``phi``) or are supplied.
- KL estimates: with ``N = 1`` the bounds are ``E_q[log w] = log Z - KL(q || sigma)`` and
  ``E_sigma[log w] = log Z + KL(sigma || q)``. Replacing ``log Z`` by the tightest upper (resp. lower) bound
  measured gives estimates that can only overstate each KL.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.experiments.runner import Executor, Experiment, Loaders, provenance, run_experiment
from hindsight.records.results import ResultFile
from hindsight.lm.base import LanguageModel
from hindsight.potentials.base import Potential
from hindsight.samplers.smc import conditional_smc, run_smc
from hindsight.twists.base import Twist


def rejection_samples(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, k: int, max_tokens: int,
                      *, seed: int = 0, batch: int = 64, max_draws: int = 100_000, min_tokens: int = 0
                      ) -> tuple[list[list[int]], int]:
    """``k`` exact samples from sigma ∝ p · phi (needs phi <= 1) and the number of model draws it took."""
    gen = torch.Generator().manual_seed(seed + 7919)
    accepted: list[list[int]] = []
    draws, rnd = 0, 0
    while len(accepted) < k:
        if draws >= max_draws:
            raise HindsightError(f"Rejection sampling accepted {len(accepted)} of {draws} draws; phi is too rare "
                                 f"here to get {k} exact samples (supply samples instead).")
        res = run_smc(lm, prompt_ids, potential, batch, max_tokens, ess_threshold=0.0, seed=seed * 1_000_003 + rnd,
                      min_tokens=min_tokens)
        rnd += 1
        draws += batch
        if bool((res.log_phi > 1e-9).any()):
            raise HindsightError(f"Rejection sampling needs phi <= 1, but {potential.name} exceeded 1.")
        u = torch.rand(batch, generator=gen, dtype=torch.float64)
        for i in (torch.log(u) < res.log_phi).nonzero().squeeze(1).tolist():
            accepted.append(res.sequences[i])
    return accepted[:k], draws


@dataclass
class Estimate:
    """Values over seeds: mean, standard deviation and a normal 95% half-width."""

    values: list[float]

    @property
    def mean(self) -> float:
        """Mean over seeds; -inf if some run found no particle with phi > 0 (log Z-hat = -inf); NaN if none."""
        if not self.values:
            return math.nan
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return 0.0
        if not all(math.isfinite(v) for v in self.values):
            return math.inf
        return statistics.stdev(self.values)

    @property
    def half_width(self) -> float:
        return 1.96 * self.std / math.sqrt(len(self.values)) if len(self.values) > 1 else 0.0

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"mean": self.mean, "std": self.std, "ci95": self.half_width, "values": self.values}


@dataclass
class BoundsRow:
    sampler: str
    particles: int
    lower: Estimate
    upper: Estimate

    @property
    def gap(self) -> float:
        return self.upper.mean - self.lower.mean

    def as_dict(self) -> dict:
        return {"sampler": self.sampler, "particles": self.particles, "lower": self.lower.as_dict(),
                "upper": self.upper.as_dict(), "gap": self.gap}


@dataclass
class KLEstimate:
    sampler: str
    mean_log_w_q: float  # E_q[log w], from proposal samples
    mean_log_w_sigma: float  # E_sigma[log w], from exact target samples
    kl_q_sigma: float  # KL(q || sigma) <= upper - E_q log w
    kl_sigma_q: float  # KL(sigma || q) <= E_sigma log w - lower
    n_q: int
    n_sigma: int


@dataclass
class BoundsReport:
    rows: list[BoundsRow]
    kls: list[KLEstimate]
    best_lower: float
    best_upper: float
    seeds: int
    exact_samples: int
    model_draws: int  # spent on rejection sampling (0 when samples were supplied)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rows": [r.as_dict() for r in self.rows], "kl": [asdict(k) for k in self.kls],
                "best_lower": self.best_lower, "best_upper": self.best_upper, "seeds": self.seeds,
                "exact_samples": self.exact_samples, "model_draws": self.model_draws, **self.extra}


@dataclass
class BoundRuns(Experiment):
    """The (sampler, particles, seed) runs of :func:`bounds`, one record each: SMC's ``log Z-hat`` (lower) and
    conditional SMC's with that seed's exact sample clamped (upper). Keys carry ``tag`` (the settings) and each
    sampler's tag (its twist), so a rerun, more seeds or a new sampler reuse the runs already recorded.

    The model, prompt ids, potential, twists (name -> twist or None) and exact samples come with ``use``, or
    ``setup`` rebuilds them from the config (``model``, ``prompt``, ``potential`` spec, ``twist_files`` and the
    exact samples in ``references``), as a worker in another process does.
    """

    samplers: list[str] = field(default_factory=list)
    particles: list[int] = field(default_factory=list)
    seeds: int = 1
    max_tokens: int = 20
    resample: str = "systematic"
    ess_threshold: float = 0.5
    min_tokens: int = 0
    tag: str = ""
    sampler_tags: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    device: str | None = None
    prompt: str | list[int] | None = None  # text (chat template unless ``raw``) or token ids
    raw: bool = False
    potential: str | None = None  # a potential spec, parsed with the model and prompt as context
    twist_files: dict[str, str | None] = field(default_factory=dict)  # sampler -> twist file (None: bootstrap)
    references: list[list[int]] = field(default_factory=list)  # one exact target sample per seed

    name = "bounds"
    key_field = "id"
    # which runs there are, and what is already in the keys (``tag``: the settings, sampler tags: the twists)
    provenance_ignores = ("samplers", "particles", "seeds", "references", "tag", "sampler_tags", "twist_files")

    def items(self) -> list[dict[str, Any]]:
        return [{"id": f"{self.tag}|{name}|{self.sampler_tags.get(name, '')}|{n}|{s}", "sampler": name,
                 "particles": n, "seed": s}
                for name in self.samplers for n in self.particles for s in range(self.seeds)]

    def setup(self, loaders: Loaders) -> dict[str, Any]:
        """The model, prompt ids, potential and twists rebuilt from the config (in a worker, say)."""
        if self.prompt is None or self.potential is None or len(self.references) < self.seeds:
            raise HindsightError("The bounds runs need the model, potential, twists and exact samples they were "
                                 "started with; give them with use() or in the config.")
        from hindsight.potentials import parse_potential
        from hindsight.twists.checkpoint import load_twist

        lm = loaders.model(self.model, self.device)
        ids = lm.prompt_ids(self.prompt, use_chat=not self.raw)
        twists = {name: load_twist(self.twist_files[name], device=lm.device, lm=lm)[0]
                  if self.twist_files.get(name) else None for name in self.samplers}
        return {"lm": lm, "prompt_ids": ids, "potential": parse_potential(self.potential, lm=lm, prompt_ids=ids),
                "twists": twists, "references": self.references}

    def run_item(self, item: dict[str, Any]) -> dict[str, Any]:
        p, n, s = self.parts, item["particles"], item["seed"]
        twist = p["twists"][item["sampler"]]
        kw = dict(resample=self.resample, ess_threshold=self.ess_threshold, min_tokens=self.min_tokens, twist=twist,
                  seed=s)
        low = run_smc(p["lm"], p["prompt_ids"], p["potential"], n, self.max_tokens, **kw).log_z
        high = conditional_smc(p["lm"], p["prompt_ids"], p["potential"], p["references"][s], n, self.max_tokens,
                               **kw).log_z
        return {"id": item["id"], "lower": low, "upper": high}

    def summarise(self, records: list[dict[str, Any]]) -> list[BoundsRow]:
        rows, by_id = [], {r["id"]: r for r in records}  # a failed run is missing from ``records``
        for name in self.samplers:
            for n in self.particles:
                mine = [by_id[it["id"]] for it in self.items()
                        if (it["sampler"], it["particles"]) == (name, n) and it["id"] in by_id]
                rows.append(BoundsRow(name, n, Estimate([r["lower"] for r in mine]),
                                      Estimate([r["upper"] for r in mine])))
        return rows


def exact_samples(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, need: int, max_tokens: int,
                  results: ResultFile, key: str, min_tokens: int = 0) -> tuple[list[list[int]], int]:
    """``need`` exact target samples and the model draws they took, recorded in ``results`` under ``key``
    (parts ``key|references``, ``key|references|1`` ...): a later run that needs more draws only the rest."""
    references: list[list[int]] = []
    draws, part = 0, 0
    while len(references) < need:
        rid = f"{key}|references" if part == 0 else f"{key}|references|{part}"
        rec = results.get(rid)
        if rec is None:
            refs, n_draws = rejection_samples(lm, prompt_ids, potential, need - len(references), max_tokens,
                                              seed=part, min_tokens=min_tokens)
            rec = {"id": rid, "references": refs, "draws": n_draws}
            results.append(rec)
        references += rec["references"]
        draws += rec["draws"]
        part += 1
    return references, draws


def kl_estimates(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, samplers: dict[str, Twist | None],
                 references: list[list[int]], rows: list[BoundsRow], max_tokens: int, kl_samples: int,
                 min_tokens: int = 0, note: Callable[[str], None] = lambda _msg: None) -> list[KLEstimate]:
    """Each sampler's KL estimates in both directions, from its proposal and from the exact samples."""
    best_lower = max(r.lower.mean for r in rows)
    best_upper = min(r.upper.mean for r in rows)
    kls = []
    for name, twist in samplers.items():
        note(f"{name} KL")
        q_run = run_smc(lm, prompt_ids, potential, kl_samples, max_tokens, twist=twist, ess_threshold=0.0, seed=10_007,
                        min_tokens=min_tokens)
        s_run = run_smc(lm, prompt_ids, potential, len(references), max_tokens, twist=twist, ess_threshold=0.0,
                        forced=references, seed=0, min_tokens=min_tokens)
        e_q = float(q_run.log_weights.mean())
        e_s = float(s_run.log_weights.mean())
        kls.append(KLEstimate(name, e_q, e_s, best_upper - e_q, e_s - best_lower, kl_samples, len(references)))
    return kls


def bounds(
    lm: LanguageModel,
    prompt_ids: Sequence[int],
    potential: Potential,
    samplers: dict[str, Twist | None],
    particles: Sequence[int],
    seeds: int,
    max_tokens: int,
    *,
    references: Sequence[Sequence[int]] | None = None,
    resample: str = "systematic",
    ess_threshold: float = 0.5,
    kl_samples: int = 32,
    min_tokens: int = 0,
    on_run: Callable[[str], None] | None = None,
    results: ResultFile | None = None,
    tag: str = "",
    sampler_tags: dict[str, str] | None = None,
    reference_tag: str | None = None,
    rebuild: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> BoundsReport:
    """Lower and upper bounds for each sampler (``name -> twist``, None = bootstrap) at each particle count over
    ``seeds`` seeds, and KL estimates for each sampler's proposal. ``references``: exact target samples (at least
    ``seeds``; drawn by rejection sampling when not given).

    ``results``: every finished run (and the exact samples) is appended there under keys prefixed by ``tag``
    (a fingerprint of the settings), and runs already in the file are read back instead of repeated, so an
    interrupted run resumes and a run with more seeds adds only the new ones (drawing more exact samples when
    those recorded are too few). ``sampler_tags`` (name -> a fingerprint of that sampler's twist) go into each
    sampler's keys, so adding or retraining one sampler's twist reuses the other samplers' runs.
    ``reference_tag`` (default ``tag``) keys the exact samples: they depend on the target only, so runs with
    other SMC settings (resampling scheme, ESS threshold) can share them.

    ``executor`` runs the (sampler, particles, seed) runs elsewhere (Ray workers); they rebuild the model,
    potential and twists from ``rebuild`` (``BoundRuns`` fields: model, device, prompt, raw, potential spec,
    twist_files), so it is required with an executor. The exact samples and KL estimates run here."""
    if seeds < 1 or not particles or min(particles) < 1:
        raise HindsightError("--seeds and every --particles value must be at least 1.")
    results = results if results is not None else ResultFile(None)
    draws = 0
    if references is None:
        references, draws = exact_samples(lm, prompt_ids, potential, max(seeds, kl_samples), max_tokens, results,
                                          tag if reference_tag is None else reference_tag, min_tokens)
    references = [list(r) for r in references]
    if len(references) < seeds:
        raise HindsightError(f"{len(references)} exact samples were supplied for {seeds} seeds; need one per seed.")
    note = on_run or (lambda _msg: None)
    if executor is not None and not rebuild:
        raise HindsightError("Bounds runs on workers need the model, prompt, potential spec and twist files "
                             "(rebuild=...) to rebuild them there.")
    runs = BoundRuns(list(samplers), list(particles), seeds, max_tokens, resample, ess_threshold, min_tokens, tag,
                     dict(sampler_tags or {}), references=references, **(rebuild or {}))
    runs.use(lm=lm, prompt_ids=prompt_ids, potential=potential, twists=samplers, references=references)

    def progress(rec: dict[str, Any] | None) -> None:
        name, _, n, s = rec["id"].split("|")[-4:] if rec else ("", "", "", "")
        note(f"{name} N={n} seed {s}" if rec else "recorded run")

    stamp = provenance(runs) if rebuild else None  # the records say which weights and settings made them
    rows = run_experiment(runs, results, on_item=progress, executor=executor, stamp=stamp)
    kls = kl_estimates(lm, prompt_ids, potential, samplers, references, rows, max_tokens, kl_samples, min_tokens, note)
    return BoundsReport(rows, kls, max(r.lower.mean for r in rows), min(r.upper.mean for r in rows), seeds,
                        len(references), draws)


def plot_bounds(report: BoundsReport, path: str, title: str = "") -> None:
    """Lower and upper bounds (mean ± 95% interval over seeds) against the number of particles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, name in enumerate(dict.fromkeys(r.sampler for r in report.rows)):
        rows = [r for r in report.rows if r.sampler == name]
        xs = [r.particles for r in rows]
        color = f"C{i}"
        for kind, style in (("lower", "-o"), ("upper", "--s")):
            est = [getattr(r, kind) for r in rows]  # a run with no phi > 0 particle (-inf) is left out
            keep = [i for i, e in enumerate(est) if math.isfinite(e.mean) and math.isfinite(e.half_width)]
            ax.errorbar([xs[i] for i in keep], [est[i].mean for i in keep], yerr=[est[i].half_width for i in keep],
                        fmt=style, color=color, capsize=3, label=f"{name} {kind}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("particles")
    ax.set_ylabel("log Z bound")
    ax.set_title(title or f"log Z bounds ({report.seeds} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
