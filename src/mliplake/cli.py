"""The ``mliplake`` command line."""
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click

from .ingest import DepositError
from .lake import Lake, default_url
from .manifest import ManifestError


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain aligned text table."""
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "" if v is None else str(v)


@click.group()
@click.option("--lake", "lake_url", default=None, metavar="URL",
              help="Lake location: a folder or s3://bucket/prefix (default: $MLIPLAKE_LAKE or ./lake).")
@click.pass_context
def main(ctx: click.Context, lake_url: str | None) -> None:
    """mliplake: a lakehouse for machine-learnt interatomic potentials."""
    ctx.obj = lake_url or default_url()


def _lake(ctx: click.Context) -> Lake:
    return Lake(ctx.obj)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dataset", "-d", help="Dataset name (or give it in the manifest).")
@click.option("--manifest", "-m", type=click.Path(path_type=Path), help="Manifest file (YAML or JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def deposit(ctx: click.Context, paths: tuple[Path, ...], dataset: str | None, manifest: Path | None,
            as_json: bool) -> None:
    """Deposit files (extxyz, JSON records, anything ASE reads) into a dataset."""
    try:
        report = _lake(ctx).deposit(list(paths), dataset=dataset, manifest=manifest, progress=None)
    except (DepositError, ManifestError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps(asdict(report), indent=1, default=str))
    else:
        click.echo(report.summary())
    if report.status not in ("stored",):
        sys.exit(1 if report.stored == 0 else 0)


@main.command()
@click.pass_context
def deposits(ctx: click.Context) -> None:
    """List deposits."""
    click.echo(table(_lake(ctx).deposits()))


@main.command()
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List datasets with their sizes, elements and labels."""
    click.echo(table(_lake(ctx).datasets(), ["dataset", "deposits", "configurations", "atoms", "quarantined",
                                              "elements", "labels", "license", "title"]))


@main.command()
@click.argument("deposit_id")
@click.pass_context
def quarantine(ctx: click.Context, deposit_id: str) -> None:
    """Show the rejected frames of a deposit (id or unique prefix) with their reasons."""
    lake = _lake(ctx)
    try:
        rec = lake.record(deposit_id)
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    rows = lake.quarantine(rec["deposit_id"]).to_pylist()
    click.echo(f"deposit {rec['deposit_id']} ({rec['dataset']}): {len(rows)} quarantined; raw files in "
               f"{lake.uri(lake.raw_dir(rec['deposit_id']))}")
    click.echo(table(rows, ["source_file", "frame_index", "detail"]))


SAMPLES = ("3bpa", "rmd17", "mlearn")


def sample_dir(name: str) -> Path:
    return Path(str(resources.files("mliplake") / "samples" / name))


@main.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The main job on the embedded defaults: deposit the bundled samples and show the lake."""
    lake = _lake(ctx)
    click.echo(f"lake: {lake.url}")
    for name in SAMPLES:
        d = sample_dir(name)
        data = sorted(p for p in d.iterdir() if p.suffix in (".xyz", ".json"))
        report = lake.deposit(data, manifest=d / "manifest.yaml", progress=None)
        click.echo(report.summary())
    click.echo("\ndatasets:")
    click.echo(table(lake.datasets(), ["dataset", "deposits", "configurations", "atoms", "quarantined",
                                        "elements", "labels", "license"]))
    click.echo("\ndeposits:")
    click.echo(table(lake.deposits()))


if __name__ == "__main__":
    main()
