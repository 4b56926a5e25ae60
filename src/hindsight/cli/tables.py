"""Printing the paired comparison and length-controlled tables that several evaluations share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from hindsight.cli.common import out


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def print_paired(table: dict[str, Any], title: str | None = None) -> None:
    """One paired table: each system minus the baseline, its 95% interval, W/L/T and the p-values."""
    if not table.get("rows"):
        return
    head = title or f"paired {table['metric']}: each system minus {table['baseline']}"
    t = Table(title=f"{head} ({table['n']} items, paired bootstrap {table['resamples']:,} resamples, "
                    f"seed {table['seed']})")
    for col in ("system", "mean", "baseline", "diff", "95% interval", "W/L/T", "p sign", "p Wilcoxon", "p Holm"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for r in table["rows"]:
        t.add_row(r["system"], f"{r['system_mean']:.3f}", f"{r['baseline_mean']:.3f}", f"{r['diff']:+.3f}",
                  f"[{r['low']:+.3f}, {r['high']:+.3f}]", f"{r['wins']}/{r['losses']}/{r['ties']}",
                  _p(r["p_sign"]), _p(r["p_wilcoxon"]), _p(r["p_holm"]))
    out.print(t)


def print_length_controlled(rows: Sequence[dict[str, Any]]) -> None:
    """Raw and length-controlled agreement per system (logistic model, length difference as covariate)."""
    t = Table(title="length-controlled agreement (agreement predicted at equal output lengths)")
    for col in ("system", "n", "raw", "length-controlled", "95% interval", "length slope"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for r in rows:
        t.add_row(r["system"], str(r["n"]), f"{r['raw']:.3f}", f"{r['controlled']:.3f}",
                  f"[{r['low']:.3f}, {r['high']:.3f}]", f"{r['phi']:+.2f}")
    out.print(t)
