"""``hindsight data``: where each evaluation set comes from, and converting its public files into our layout."""

from __future__ import annotations

import typer
from rich.table import Table

from hindsight.cli.common import JSON_OPTION, out, print_json

data_app = typer.Typer(help="Get the evaluation data: list the public sources, convert downloaded files.",
                       no_args_is_help=True)


@data_app.command("sources")
def sources(json_out: bool = JSON_OPTION) -> None:
    """Each dataset: the public files to download, from where, and what `convert` writes."""
    from hindsight.records.convert import SOURCES

    rows = [{"kind": s.kind, "download": s.url, "files": list(s.inputs), "writes": list(s.writes)}
            for s, _ in SOURCES.values()]
    if json_out:
        print_json({"sources": rows})
        return
    table = Table(title="Evaluation data: download these, then `hindsight data convert KIND FILES... --out DIR`")
    for col in ("kind", "download", "files", "writes"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["kind"], r["download"], "\n".join(r["files"]), "\n".join(r["writes"]))
    out.print(table)


@data_app.command("convert")
def convert(
    kind: str = typer.Argument(..., help="hh-rlhf, truthfulqa, alpaca-eval or scifact (see `hindsight data sources`)."),
    files: list[str] = typer.Argument(..., help="The downloaded public file(s), in the order `sources` lists."),
    out_dir: str = typer.Option(..., "--out", help="The data folder to write into (then pass it as --data)."),
    subset: str = typer.Option("harmless-base", "--subset", help="hh-rlhf only: harmless-base or helpful-base."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Convert public release files into the layout `--data DIR` expects."""
    from hindsight.records.convert import convert as run

    written = run(kind, files, out_dir, subset)
    if json_out:
        print_json({"kind": kind, "written": written})
        return
    for path, rows in written.items():
        out.print(f"wrote {rows} records to {path}", soft_wrap=True)
    out.print(f"Use it with --data {out_dir} (or export HINDSIGHT_DATA={out_dir}).", soft_wrap=True)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
