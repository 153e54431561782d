"""The ``mliplake`` command line."""
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import yaml

from mliplake.core.manifest import ManifestError
from mliplake.ingest.deposit import DepositError
from mliplake.lake import Lake


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


class _Main(click.Group):
    """Errors in what the user gave (filters, SQL, paths) print as one clear line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from mliplake.filters import FilterError
        from mliplake.query.engine import SQLError

        try:
            return super().invoke(ctx)
        except (FilterError, SQLError) as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:  # a path that is a folder, a missing folder, no permission, a file as the lake
            raise click.ClickException(_os_error(e)) from None


def _os_error(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {e.strerror or e}" if where else str(e)


#: an output file: a folder there is a usage error naming it (not an IsADirectoryError later)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group(cls=_Main)
@click.option("--lake", "lake_url", default=None, metavar="URL",
              help="Lake location: a folder or s3://bucket/prefix (default: $MLIPLAKE_LAKE or ./lake).")
@click.option("--server", default=None, envvar="MLIPLAKE_SERVER", metavar="URL",
              help="Go through an mliplake service's API instead of a lake (default: $MLIPLAKE_SERVER); "
                   "the token comes from $MLIPLAKE_TOKEN.")
@click.pass_context
def main(ctx: click.Context, lake_url: str | None, server: str | None) -> None:
    """mliplake: a lakehouse for machine-learnt interatomic potentials."""
    from mliplake.settings import Settings

    settings = Settings()  # one command, one reading of the environment, passed down
    ctx.meta["settings"] = settings
    ctx.meta["server"] = server
    ctx.obj = lake_url or settings.lake


def _lake(ctx: click.Context) -> Lake:
    root = ctx.find_root()
    if root.meta.get("server") and ctx.command.name not in REMOTE:
        raise click.ClickException(f"`mliplake {ctx.command.name}` works on a lake, not through --server "
                                   f"(through the API: {', '.join(sorted(REMOTE))})")
    return Lake(ctx.obj, settings=ctx.meta.get("settings"))


#: commands that go through the API when --server (or $MLIPLAKE_SERVER) is given
REMOTE = {"deposit", "deposits", "datasets", "quarantine", "sql", "search", "catalog", "keys", "summary", "export"}


def _remote(ctx: click.Context) -> Any:
    """The API client when --server is given, else None."""
    url = ctx.find_root().meta.get("server")
    if not url:
        return None
    from mliplake.client import Client

    return Client(url, progress=None)


def _api_errors(fn: Any) -> Any:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        from mliplake.client import APIError

        try:
            return fn(*args, **kw)
        except APIError as e:
            raise click.ClickException(str(e)) from None
        except ConnectionError as e:
            raise click.ClickException(f"the service cannot be reached: {e}") from None
    return wrapper


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dataset", "-d", help="Dataset name (or give it in the manifest).")
@click.option("--manifest", "-m", type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest file (YAML or JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--replace", is_flag=True,
              help="Let this deposit replace a stored version of the same files even if all its frames were "
                   "quarantined, or deposit again files that were retracted.")
@click.pass_context
def deposit(ctx: click.Context, paths: tuple[Path, ...], dataset: str | None, manifest: Path | None,
            as_json: bool, replace: bool) -> None:
    """Deposit files (extxyz, JSON records, anything ASE reads) into a dataset."""
    if (client := _remote(ctx)) is not None:
        _deposit_remote(client, paths, dataset, manifest, as_json)
        return
    try:
        report = _lake(ctx).deposit(list(paths), dataset=dataset, manifest=manifest, progress=None, replace=replace)
    except (DepositError, ManifestError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps(asdict(report), indent=1, default=str))
    else:
        click.echo(report.summary())
    if report.status not in ("stored",):
        sys.exit(1 if report.stored == 0 else 0)


@_api_errors
def _deposit_remote(client: Any, paths: tuple[Path, ...], dataset: str | None, manifest: Path | None,
                    as_json: bool) -> None:
    status = client.deposit(list(paths), manifest=manifest, dataset=dataset)
    if as_json:
        click.echo(json.dumps(status, indent=1, default=str))
    else:
        r = status.get("report") or {}
        click.echo(f"deposit {status.get('deposit_id', status['id'])} -> dataset {r.get('dataset', dataset or '?')}: "
                   f"{status['status']}")
        if r:
            click.echo(f"  frames read {r.get('frames_read')}, stored {r.get('stored')}, duplicates "
                       f"{r.get('duplicates')}, quarantined {r.get('quarantined')}")
        if status.get("error"):
            click.echo(f"  error: {status['error']}")
    if status["status"] not in ("stored",):
        sys.exit(1 if not (status.get("report") or {}).get("stored") else 0)


@main.command()
@click.pass_context
@_api_errors
def deposits(ctx: click.Context) -> None:
    """List deposits."""
    client = _remote(ctx)
    click.echo(table(client.deposits() if client else _lake(ctx).deposits()))


@main.command()
@click.pass_context
@_api_errors
def datasets(ctx: click.Context) -> None:
    """List datasets with their sizes, elements and labels."""
    client = _remote(ctx)
    click.echo(table(client.datasets() if client else _lake(ctx).datasets(), ["dataset", "deposits", "configurations", "atoms", "quarantined",
                                              "elements", "labels", "license", "title"]))


@main.command()
@click.argument("deposit_id")
@click.pass_context
def quarantine(ctx: click.Context, deposit_id: str) -> None:
    """Show the rejected frames of a deposit (id or unique prefix) with their reasons."""
    if (client := _remote(ctx)) is not None:
        _api_errors(lambda: click.echo(table(client.quarantine(deposit_id), ["source_file", "frame_index", "detail"])))()
        return
    lake = _lake(ctx)
    try:
        rec = lake.record(deposit_id)
    except KeyError as e:
        raise click.ClickException(str(e)) from None
    rows = lake.quarantine(rec["deposit_id"]).to_pylist()
    click.echo(f"deposit {rec['deposit_id']} ({rec['dataset']}): {len(rows)} quarantined; raw files in "
               f"{lake.uri(lake.raw_dir(rec['deposit_id']))}")
    click.echo(table(rows, ["source_file", "frame_index", "detail"]))


def _emit(tab: Any, fmt: str, out: Path | None) -> None:
    """A table as text, CSV, JSON or Parquet, to stdout or a file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        if out is None:
            raise click.ClickException("--format parquet needs --out FILE")
        pq.write_table(tab, out)
        click.echo(f"{tab.num_rows} rows -> {out}", err=True)
        return
    if fmt == "csv":
        import io

        buf = io.BytesIO()
        pacsv.write_csv(tab, buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        text = json.dumps(tab.to_pylist(), indent=1, default=str) + "\n"
    else:
        text = table(tab.to_pylist(), tab.column_names) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        Path(out).write_text(text)


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table")
@click.option("--out", type=OUT_FILE, help="Write to a file instead of the terminal.")
@click.option("--untrusted", is_flag=True, help="Run sandboxed: one SELECT, lake files only, time and row limits.")
@click.pass_context
def sql(ctx: click.Context, query: str, fmt: str, out: Path | None, untrusted: bool) -> None:
    """Run SQL over the views: configurations, datasets, deposits, quarantine, keys."""
    if not query.strip():
        raise click.BadParameter("the query is empty", param_hint="QUERY")
    if (client := _remote(ctx)) is not None:  # the API runs every query sandboxed
        _api_errors(lambda: _emit(client.sql(query), fmt, out))()
        return
    lake = _lake(ctx)
    if untrusted:
        _emit(lake.sql(query, untrusted=True), fmt, out)
        return
    rel = lake.sql(query)
    if rel is None:  # a statement without a result (SET, CREATE VIEW, ...)
        click.echo("done (the statement returns no rows)", err=True)
        return
    _emit(rel.to_arrow_table(), fmt, out)


@main.command()
@click.argument("filter", required=False, default="")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 1_000_000_000), help="Rows to show.")
@click.option("--columns", help="Comma-separated columns to show.")
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON.")
@click.option("--count", "only_count", is_flag=True, help="Print only the number of matching configurations.")
@click.pass_context
def search(ctx: click.Context, filter: str, limit: int, columns: str | None, as_json: bool, only_count: bool) -> None:
    """Configurations matching a filter (OPTIMADE filter language, see docs/query.md)."""
    from mliplake.search import SearchError, engine_for

    # the API client and the engines answer count and search alike
    source = _remote(ctx) or engine_for(_lake(ctx))  # OpenSearch when configured, DuckDB otherwise
    try:
        _api_errors(_search_print)(source, filter, limit, columns, as_json, only_count)
    except SearchError as e:
        raise click.ClickException(str(e)) from None


def _search_print(source: Any, filter: str, limit: int, columns: str | None, as_json: bool, only_count: bool) -> None:
    n = source.count(filter)
    if only_count:
        click.echo(n)
        return
    cols = [c.strip() for c in columns.split(",")] if columns else None
    tab = source.search(filter, columns=cols, limit=limit)
    if as_json:
        click.echo(json.dumps({"count": n, "rows": tab.to_pylist()}, indent=1, default=str))
        return
    click.echo(f"{n} configurations" + (f" (first {tab.num_rows})" if n > tab.num_rows else ""))
    click.echo(table(tab.to_pylist(), tab.column_names))


@main.command()
@click.argument("text", required=False, default="")
@click.option("--elements", help="Comma-separated symbols, as picked on a periodic table.")
@click.option("--only", "mode", flag_value="only", help="Datasets with only these elements.")
@click.option("--any", "mode", flag_value="any", help="Datasets with any of these elements.")
@click.option("--all", "mode", flag_value="all", default=True, help="Datasets with all of these elements (default).")
@click.option("--license", "license_", help="Only datasets under this licence (SPDX).")
@click.option("--sort", type=click.Choice(["relevance", "size", "date"]), default="relevance", show_default=True)
@click.pass_context
def catalog(ctx: click.Context, text: str, elements: str | None, mode: str, license_: str | None, sort: str) -> None:
    """Find datasets: free text over names, titles, descriptions, authors, methods, sampling; facets."""
    from mliplake.catalogue import search as catalog_search

    wanted = [e.strip() for e in elements.split(",")] if elements else None
    if (client := _remote(ctx)) is not None:
        out = _api_errors(client.catalogue)(text, wanted, mode)
        r = catalog_search.CatalogueResult(out["meta"]["data_returned"], out["data"],
                                           {k: [tuple(x) for x in v] for k, v in out["meta"]["facets"].items()})
    else:
        r = catalog_search.search(_lake(ctx), text, wanted, mode, license_, sort)
    click.echo(f"{r.total} datasets")
    click.echo(table(r.datasets, ["dataset", "title", "configurations", "elements", "properties", "license",
                                  "quality_score"]))
    for facet, values in r.facets.items():
        click.echo(f"{facet}: " + ", ".join(f"{v} ({n})" for v, n in values[:12]))


@main.group()
def index() -> None:
    """The OpenSearch index ($MLIPLAKE_OPENSEARCH_URL): rebuild, status, reconcile."""


def _search_client():  # noqa: ANN202
    from mliplake import search

    url = click.get_current_context().meta["settings"].opensearch_url.get_secret_value()
    if not url:
        raise click.ClickException("no search server: set MLIPLAKE_OPENSEARCH_URL (searches use DuckDB without one)")
    return search, search.connect(url)


@index.command()
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Index the whole lake into a new index version and swap the alias to it atomically."""
    from mliplake.catalogue import search as catalog_search

    search, client = _search_client()
    try:
        r = search.index_lake(_lake(ctx), client)
        n = catalog_search.index_catalogue(_lake(ctx), client)
    except search.SearchError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{r.indexed} documents -> {r.index} (alias {r.alias}) in {r.seconds:.1f} s; {n} dataset cards -> "
               f"{catalog_search.ALIAS}")


@index.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Which index the alias points to, and how it compares with the lake."""
    search, client = _search_client()
    lake = _lake(ctx)
    alias = search.index_name(lake)
    try:
        with search.talking_to(client, f"reading the status of {alias}"):
            current = search.current_index(client, alias)
            docs = client.count(index=alias)["count"] if current is not None else 0
    except search.SearchError as e:
        raise click.ClickException(str(e)) from None
    if current is None:
        click.echo(f"no index behind {alias}: run `mliplake index rebuild`")
        return
    click.echo(f"{alias} -> {current}: {docs} documents; the lake has {lake.count()} configurations")


@index.command()
@click.pass_context
def reconcile(ctx: click.Context) -> None:
    """Find and repair drift between the lake and the index."""
    search, client = _search_client()
    try:
        r = search.reconcile(_lake(ctx), client)
    except search.SearchError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{r.index}: checked {r.checked}; indexed {len(r.missing)} missing, re-indexed {len(r.stale)} stale, "
               f"deleted {len(r.extra)} extra")


@main.command()
@click.pass_context
def keys(ctx: click.Context) -> None:
    """Every key in the lake: category, dtype, unit, how many configurations carry it, in which datasets."""
    client = _remote(ctx)
    click.echo(table(_api_errors(client.keys)() if client else _lake(ctx).keys().to_pylist()))


PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".html")


def _plot_path(ctx: click.Context, param: click.Parameter, path: Path | None) -> Path | None:
    if path is not None and path.suffix.lower() not in PLOT_SUFFIXES:
        raise click.BadParameter(f"{path}: the file name must end in {', '.join(PLOT_SUFFIXES)}", param_hint="--plot")
    return path


@main.command()
@click.option("--filter", "-f", "filter_", default="", help="Summarise only matching configurations.")
@click.option("--key", "-k", "keys_", multiple=True, help="A field or info.<key> (repeat); default: the usual ones.")
@click.option("--plot", type=OUT_FILE, callback=_plot_path,
              help="Histograms to a .png, .svg, .pdf or .html file.")
@click.option("--bins", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
def summary(ctx: click.Context, filter_: str, keys_: tuple[str, ...], plot: Path | None, bins: int) -> None:
    """Counts, statistics, value counts, element counts and histograms, computed inside DuckDB."""
    from mliplake.query import stats

    if (client := _remote(ctx)) is not None:
        s = stats.from_dict(_api_errors(client.summary)(filter_, list(keys_) or None, bins))
    else:
        s = stats.summarise(_lake(ctx), filter_, list(keys_) or None, bins=bins)
    click.echo(stats.text(s), nl=False)
    if plot:
        stats.plot(s, str(plot))
        click.echo(f"plot -> {plot}")


@main.command()
@click.option("--filter", "-f", "filter_", default="", help="Export only matching configurations.")
@click.option("--format", "fmt", type=click.Choice(["extxyz", "parquet"]), default="extxyz", show_default=True)
@click.option("--out", "-o", required=True, type=OUT_FILE)
@click.option("--original-keys", is_flag=True, help="Labels under the deposits' own key names, not MACE's REF_*.")
@click.pass_context
def export(ctx: click.Context, filter_: str, fmt: str, out: Path, original_keys: bool) -> None:
    """Write matching configurations to extxyz (MACE-ready) or Parquet, streaming, with a manifest beside."""
    from mliplake.query.export import export as run

    if (client := _remote(ctx)) is not None:
        n = _api_errors(client.export)(filter_, out, format=fmt, original_keys=original_keys)
        click.echo(f"{n} configurations -> {out}")
        return
    n = run(_lake(ctx), filter_, out, format=fmt, original_keys=original_keys, progress=None)
    click.echo(f"{n} configurations -> {out} (manifest: {out}.manifest.yaml)")


@main.command("training-set")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def training_set(ctx: click.Context, spec: Path) -> None:
    """Materialise a training-set spec (YAML): an immutable, content-addressed snapshot."""
    from mliplake.ml import training_sets as training

    try:
        ts = training.materialise(_lake(ctx), training.load_spec(spec))
    except (training.SpecError, ValueError, yaml.YAMLError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"training set {ts.name} version {ts.version}: {ts.manifest['counts']} -> {ts.path}")


@main.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--slurm", "on_slurm", is_flag=True,
              help="Submit as a Slurm batch job from this (login) node, follow it, register the model.")
@click.option("--partition", default="", help="With --slurm: the partition.")
@click.option("--account", default="", help="With --slurm: the account to charge.")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(0),
              help="With --slurm: GPUs to ask for (0: none).")
@click.option("--time", "time_limit", default="04:00:00", show_default=True, help="With --slurm: the time limit.")
@click.option("--cpus", default=8, show_default=True, type=click.IntRange(1), help="With --slurm: CPUs per task.")
@click.option("--mem", default="32G", show_default=True, help="With --slurm: memory per node.")
@click.option("--setup", default="", help='With --slurm: shell lines the job runs first, e.g. "module load cuda".')
@click.option("--script-only", is_flag=True, help="With --slurm: print the batch script and submit nothing.")
@click.pass_context
def train(ctx: click.Context, spec: Path, on_slurm: bool, partition: str, account: str, gpus: int,
          time_limit: str, cpus: int, mem: str, setup: str, script_only: bool) -> None:
    """Train a model spec (YAML) out of process and register it; epoch metrics as they come.

    With --slurm the training runs as a batch job (the work directory, $MLIPLAKE_WORKDIR, must be on
    a filesystem the compute nodes share); the command waits for it and registers the model.
    """
    from mliplake.ml import models as ml
    from mliplake.ml import slurm

    try:
        lake, mspec = _lake(ctx), ml.load_model_spec(spec)
    except (ml.SpecError, yaml.YAMLError) as e:
        raise click.ClickException(str(e)) from None
    if on_slurm:
        opts = slurm.SlurmOptions(partition=partition, account=account, gpus=gpus, time=time_limit,
                                  cpus_per_task=cpus, mem=mem, setup=setup)
        try:
            if script_only:
                script, work = ml.slurm_script(lake, mspec, opts)
                click.echo(script + f"# work directory: {work}")
                return
            card = ml.train_on_slurm(lake, mspec, opts, on_state=lambda job, s: click.echo(f"Slurm job {job}: {s}"))
        except slurm.SlurmError as e:
            raise click.ClickException(str(e)) from None
    else:
        card = ml.train(lake, mspec, on_epoch=lambda e: click.echo(
            f"epoch {e['epoch']}: loss {e['loss']:.4g}  RMSE E {e['rmse_e_per_atom_meV']:.1f} meV/atom  "
            f"RMSE F {e['rmse_f_meV_per_A']:.1f} meV/A  ({e['seconds']:.0f} s)"))
    click.echo(f"model {card['model_id']}: {card['parameters']} parameters, elements {','.join(card['elements'])}")


@main.command()
@click.argument("model_id", required=False)
@click.option("--download", type=OUT_FILE, help="Copy the model file here.")
@click.pass_context
def models(ctx: click.Context, model_id: str | None, download: Path | None) -> None:
    """List registered models, or show one model card (and download its file)."""
    from mliplake.ml import models as ml

    lake = _lake(ctx)
    if not model_id:
        rows = [{"model_id": c["model_id"], "architecture": c["architecture"], "parameters": c["parameters"],
                 "elements": c["elements"], "training_set": f"{c['training_set']['name']}@{c['training_set']['version']}",
                 "seconds": c["training"]["seconds"], "license": c["license"], "created_at": c["created_at"]}
                for c in ml.models(lake)]
        click.echo(table(rows))
        return
    try:
        card = ml.card(lake, model_id)
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    click.echo(json.dumps(card, indent=1))
    if download:
        import shutil

        shutil.copyfile(ml.model_path(lake, card["model_id"]), download)
        click.echo(f"model file -> {download}")


@main.command()
@click.option("--sort", default="energy_mae", show_default=True, help="A metric column (errors ascending, scores descending).")
@click.option("--benchmark", "benchmark_name", help="Only this benchmark set.")
@click.pass_context
def leaderboard(ctx: click.Context, sort: str, benchmark_name: str | None) -> None:
    """Models with their card fields and benchmark metrics."""
    from mliplake.ml import models as ml

    rows = ml.leaderboard(_lake(ctx), benchmark_name, sort)
    cols = ["model_id", "benchmark", "energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "forces_r2",
            "parameters", "training_set", "training_set_version", "configurations", "seconds"]
    extra = [k for k in (rows[0] if rows else {}) if k not in cols and k in ("F1", "DAF", "Accuracy", "Precision")]
    click.echo(table(rows, cols + extra) if rows else "(no benchmarks yet)")


@main.command()
@click.argument("model_id")
@click.pass_context
def lineage(ctx: click.Context, model_id: str) -> None:
    """From a model to its card, training-set manifest and the exact config_ids it saw."""
    from mliplake.ml import models as ml

    try:
        out = ml.lineage(_lake(ctx), model_id)
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    click.echo(json.dumps(out, indent=1))


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


@main.command()
@click.argument("deposit_id", required=False)
@click.option("--dataset", "-d", help="Retract every deposit of this dataset.")
@click.option("--reason", required=True, help="Why (kept in the deposit record and the audit log).")
@click.option("--purge", is_flag=True, help="Also delete the raw files from the raw zone.")
@click.pass_context
def retract(ctx: click.Context, deposit_id: str | None, dataset: str | None, reason: str, purge: bool) -> None:
    """Take a deposit (or a whole dataset) out of every view, search and catalogue at once."""
    from mliplake.access import AccessError

    try:
        ids = _lake(ctx).retract(deposit_id, dataset=dataset, reason=reason, purge=purge)
    except (KeyError, ValueError, AccessError) as e:
        raise click.ClickException(str(e)) from None
    for dep in ids:
        click.echo(f"retracted {dep}" + (" (raw files purged)" if purge else ""))


@main.command()
@click.argument("dataset")
@click.argument("visibility", type=click.Choice(["public", "private", "embargoed"]))
@click.option("--group", "groups", multiple=True, help="A group that may see a private dataset (repeatable).")
@click.option("--until", "embargo_until", metavar="YYYY-MM-DD", help="Embargo end: public from that date on.")
@click.pass_context
def visibility(ctx: click.Context, dataset: str, visibility: str, groups: tuple[str, ...],
               embargo_until: str | None) -> None:
    """Change who may see a dataset (its owner, a curator or an admin); effective at once."""
    from mliplake.access import AccessError

    try:
        p = _lake(ctx).set_visibility(dataset, visibility, list(groups) or None, embargo_until)
    except (KeyError, ValueError, AccessError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{p.dataset}: {p.visibility}" + (f", groups {', '.join(p.groups)}" if p.groups else "") +
               (f", public from {p.embargo_until}" if p.embargo_until else ""))


@main.command()
@click.option("--retention", default=None, help="Keep versions younger than this (default: the setting).")
@click.pass_context
def maintain(ctx: click.Context, retention: str | None) -> None:
    """Compact small files, expire old versions and delete files no version needs."""
    out = _lake(ctx).maintain(retention)
    click.echo(f"data files {out['files_before']} -> {out['files_after']}; versions older than "
               f"{out['retention']} expired")


@main.command()
@click.pass_context
def config(ctx: click.Context) -> None:
    """Show the effective settings (secrets masked)."""
    settings = ctx.meta["settings"]
    values = settings.masked() | {"lake": ctx.obj}
    lake = _lake(ctx)
    values["catalog"] = settings.masked()["catalog"] or lake.tables.catalog
    width = max(map(len, values))
    for name, value in values.items():
        click.echo(f"{name:<{width}}  {value}")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: the api_host setting, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: the api_port setting, 8000).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (each serves any request; deposits are processed once).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int) -> None:
    """Serve the REST API, OPTIMADE (/optimade) and the web portal (/) over this lake."""
    import os

    import uvicorn

    settings = ctx.meta["settings"]
    os.environ["MLIPLAKE_LAKE"] = str(_lake(ctx).url)  # worker processes build the app from the environment
    host, port = host or settings.api_host, port or settings.api_port
    click.echo(f"mliplake serving {os.environ['MLIPLAKE_LAKE']} on http://{host}:{port}/ (API docs: /api/docs)")
    uvicorn.run("mliplake.server.asgi:app", host=host, port=port, workers=workers, log_level="info",
                proxy_headers=True, forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))


# ---------------------------------------------------------------- accounts (users, groups, API tokens)


def _accounts(ctx: click.Context) -> Any:
    """The accounts database of this lake (``MLIPLAKE_ACCOUNTS``, else the lake's state folder)."""
    from mliplake.accounts import Accounts, AccountsError, accounts_url

    settings = ctx.meta["settings"]
    try:
        return Accounts(accounts_url(settings, None if settings.accounts else _lake(ctx)))
    except AccountsError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # a bad URL, a database that cannot be reached: one line, no traceback
        raise click.ClickException(f"accounts database: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None


def _operator() -> str:
    import os

    return "cli:" + (os.environ.get("USER") or "operator")


def _accounts_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from mliplake.accounts import AccountsError

    try:
        return fn(*args, **kwargs)
    except AccountsError as e:
        raise click.ClickException(str(e)) from None


def _when(v: Any) -> str:
    return v.strftime("%Y-%m-%d %H:%M:%SZ") if v is not None else ""


@main.group()
def users() -> None:
    """Users of the REST API (an operator's commands: no token needed)."""


@users.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, metavar="ROLE",
              help="reader, depositor, curator or admin (repeat for several; default: reader).")
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="A group the user is in (repeatable).")
@click.option("--email", default="", help="The user's e-mail address.")
@click.option("--display-name", default="", help="The name shown for the user.")
@click.pass_context
def users_add(ctx: click.Context, name: str, roles: tuple[str, ...], groups: tuple[str, ...], email: str,
              display_name: str) -> None:
    """Add a user."""
    acc = _accounts(ctx)
    u = _accounts_call(acc.add_user, name, roles or ("reader",), groups, email, actor=_operator(),
                       display_name=display_name)
    click.echo(f"user {u['name']} added: roles {','.join(u['roles']) or '(none)'}; "
               f"groups {','.join(u['groups']) or '(none)'}")


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List the users."""
    rows = _accounts(ctx).users()
    click.echo(table([r | {"created_at": _when(r["created_at"]), "disabled": "yes" if r["disabled"] else ""}
                      for r in rows], ["name", "roles", "groups", "email", "disabled", "created_at"]))


@users.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--target", default=None, help="Only changes to this user, group or token.")
@click.pass_context
def users_audit(ctx: click.Context, limit: int, target: str | None) -> None:
    """Changes to users, groups and tokens, newest first: when, who, what."""
    rows = _accounts(ctx).audit(limit, target)
    click.echo(table([r | {"at": _when(r["at"]), "detail": json.dumps(r["detail"], default=str)} for r in rows]))


@users.command("disable")
@click.argument("name")
@click.pass_context
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable a user: their tokens stop working at once."""
    changed = _accounts_call(_accounts(ctx).disable_user, name, actor=_operator())
    click.echo(f"user {name} disabled" if changed else f"user {name} was already disabled")


@users.command("set-roles")
@click.argument("name")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="The user's roles from now on (repeatable).")
@click.pass_context
def users_set_roles(ctx: click.Context, name: str, roles: tuple[str, ...]) -> None:
    """Replace a user's roles."""
    out = _accounts_call(_accounts(ctx).set_roles, name, roles, actor=_operator())
    click.echo(f"user {name}: roles {','.join(out) or '(none)'}")


@main.group()
def groups() -> None:
    """Groups of users (a private dataset names the groups that may see it)."""


@groups.command("add")
@click.argument("name")
@click.option("--description", default="", help="What the group is.")
@click.pass_context
def groups_add(ctx: click.Context, name: str, description: str) -> None:
    """Add a group."""
    _accounts_call(_accounts(ctx).add_group, name, description, actor=_operator())
    click.echo(f"group {name} added")


@groups.command("add-member")
@click.argument("group")
@click.argument("user")
@click.pass_context
def groups_add_member(ctx: click.Context, group: str, user: str) -> None:
    """Put a user in a group."""
    changed = _accounts_call(_accounts(ctx).add_member, group, user, actor=_operator())
    click.echo(f"{user} added to {group}" if changed else f"{user} was already in {group}")


@groups.command("remove-member")
@click.argument("group")
@click.argument("user")
@click.pass_context
def groups_remove_member(ctx: click.Context, group: str, user: str) -> None:
    """Take a user out of a group."""
    _accounts_call(_accounts(ctx).remove_member, group, user, actor=_operator())
    click.echo(f"{user} removed from {group}")


@groups.command("list")
@click.pass_context
def groups_list(ctx: click.Context) -> None:
    """List the groups and their members."""
    rows = _accounts(ctx).groups()
    click.echo(table(rows, ["name", "members", "description"]))


@main.group()
def tokens() -> None:
    """API tokens (the secret is shown once, when created; only its hash is kept)."""


@tokens.command("create")
@click.argument("name")
@click.option("--expires", default=None, metavar="DURATION", help="Valid for this long: 30d, 12h, 2w (default: until revoked).")
@click.option("--scope", type=click.Choice(["read", "write"]), default="read", show_default=True,
              help="read: queries only; write: deposits and changes too (as the user's roles allow).")
@click.pass_context
def tokens_create(ctx: click.Context, name: str, expires: str | None, scope: str) -> None:
    """Create a token for user NAME; the secret is the last line printed, alone: keep it now."""
    from mliplake.accounts import parse_duration

    delta = _accounts_call(parse_duration, expires) if expires else None
    token_id, secret = _accounts_call(_accounts(ctx).create_token, name, scope, delta, actor=_operator())
    click.echo(f"token {token_id} for {name} ({scope}"
               + (f", expires in {expires}" if expires else ", no expiry") + "); it is shown only now:", err=False)
    click.echo(secret)


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token (by its id, as `tokens list` shows it)."""
    changed = _accounts_call(_accounts(ctx).revoke_token, token_id, actor=_operator())
    click.echo(f"token {token_id} revoked" if changed else f"token {token_id} was already revoked")


@tokens.command("list")
@click.argument("name", required=False)
@click.pass_context
def tokens_list(ctx: click.Context, name: str | None) -> None:
    """List tokens (of user NAME, or all); secrets are never shown."""
    rows = _accounts_call(_accounts(ctx).tokens, name)
    click.echo(table([r | {k: _when(r[k]) for k in ("created_at", "expires_at", "revoked_at", "last_used_at")}
                      for r in rows],
                     ["id", "user", "scope", "state", "created_at", "expires_at", "last_used_at"]))
