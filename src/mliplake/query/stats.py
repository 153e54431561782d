"""Statistics over a filtered subset, computed inside DuckDB: nothing but aggregates comes back."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mliplake import filters
from mliplake.filters.sql import Compiler

if TYPE_CHECKING:
    from mliplake.lake import Lake

DEFAULT_NUMERIC = ["energy_per_atom", "max_force", "nsites", "volume"]
DEFAULT_CATEGORICAL = ["dataset", "chemical_formula_reduced"]
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
BINS = 20


@dataclass
class NumericStats:
    key: str
    count: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    quantiles: dict[float, float]
    histogram: list[tuple[float, float, int]] = field(default_factory=list)  # (low, high, count)


@dataclass
class Summary:
    filter: str
    count: int
    numeric: list[NumericStats]
    categorical: dict[str, list[tuple[Any, int]]]
    elements: list[tuple[str, int]]


def from_dict(d: dict[str, Any]) -> Summary:
    """A :class:`Summary` back from its JSON form (what the API returns)."""
    numeric = [NumericStats(**(n | {"quantiles": {float(q): v for q, v in (n.get("quantiles") or {}).items()},
                                    "histogram": [tuple(b) for b in n.get("histogram") or []]}))
               for n in d.get("numeric", [])]
    categorical = {k: [tuple(x) for x in v] for k, v in (d.get("categorical") or {}).items()}
    return Summary(d.get("filter", ""), d["count"], numeric, categorical, [tuple(e) for e in d.get("elements", [])])


def _key_expr(key: str) -> tuple[str, str]:
    """SQL expression and kind (number | string | json) for a summary key: a field or info.<key>."""
    f = filters.field_named(key)
    if f.spec:
        kind = "number" if f.kind in ("number", "integer") else "string"
        return f.spec.column, kind
    return Compiler().number_expr(f), "json"  # numbers as the filters see them


def summarise(lake: Lake, filter: str | None = None, keys: list[str] | None = None, bins: int = BINS,
              top: int = 10) -> Summary:
    """Counts, statistics and histograms of ``keys`` over the configurations a filter selects
    (kept per lake snapshot and scope: the same question is answered once until the lake changes)."""
    from mliplake.query.engine import per_snapshot

    if bins < 1 or top < 0:
        raise ValueError(f"summary: bins must be at least 1 and top at least 0 (got {bins} and {top})")
    return per_snapshot(lake, ("summary", filter, tuple(keys or ()), bins, top),
                        lambda: _summarise(lake, filter, keys, bins, top))


def _summarise(lake: Lake, filter: str | None, keys: list[str] | None, bins: int, top: int) -> Summary:
    c = Compiler()
    where = c.compile(filters.parse(filter))
    params = c.params
    con = lake.connection()
    base = f"(SELECT * FROM configurations WHERE {where})"
    total = con.sql(f"SELECT count(*) FROM {base}", params=params).fetchall()[0][0]
    numeric_keys, categorical_keys = [], []
    for key in keys or (DEFAULT_NUMERIC + DEFAULT_CATEGORICAL):
        expr, kind = _key_expr(key)
        if kind == "json":
            # a user key: numeric if any of its values is a number, else categorical
            n = con.sql(f"SELECT count({expr}) FROM {base}", params=params).fetchall()[0][0]
            kind = "number" if n else "string"
            if kind == "string":
                expr = Compiler().string_expr(filters.field_named(key))
        (numeric_keys if kind == "number" else categorical_keys).append((key, expr))
    numeric = [_numeric(con, base, params, key, expr, bins) for key, expr in numeric_keys]
    categorical = {
        key: [tuple(r) for r in con.sql(
            f"SELECT {expr} AS v, count(*) AS n FROM {base} WHERE {expr} IS NOT NULL GROUP BY v "
            f"ORDER BY n DESC, v LIMIT {int(top)}", params=params).fetchall()]
        for key, expr in categorical_keys
    }
    elements = [tuple(r) for r in con.sql(
        f"SELECT e, count(*) AS n FROM (SELECT unnest(elements) AS e FROM {base}) GROUP BY e ORDER BY n DESC, e",
        params=params).fetchall()]
    return Summary(filter or "", total, numeric, categorical, elements)


def _numeric(con: Any, base: str, params: list, key: str, expr: str, bins: int) -> NumericStats:
    # Every value divided by k, the power of two just below the largest |value|: exact (so the results
    # are bit for bit those of the unscaled values), and |y| < 2, so that sums, variances, quantiles
    # and bin widths cannot overflow (DuckDB raises "STDDEV_SAMP is out of range" near 1e308).
    scaled = (f"(SELECT x / k AS y, k FROM (SELECT x, "
              f"coalesce(pow(2, floor(log2(nullif(max(abs(x)) OVER (), 0)))), 1) AS k "
              f"FROM (SELECT CAST({expr} AS DOUBLE) AS x FROM {base}) WHERE x IS NOT NULL AND isfinite(x)))")
    qs = ", ".join(str(q) for q in QUANTILES)
    n, lo, hi, mean, std, quant, k = con.sql(
        f"SELECT count(y), min(y), max(y), avg(y), stddev_samp(y), quantile_cont(y, [{qs}]), max(k) FROM {scaled}",
        params=params).fetchall()[0]
    stats = NumericStats(key, n, _times(lo, k), _times(hi, k), _times(mean, k), _times(std, k),
                         {q: _times(v, k) for q, v in zip(QUANTILES, quant or [])})
    if n:
        width = (hi - lo) / bins if hi > lo else 1.0 / k  # scaled: at most 4 / bins; one value: a bin 1 wide
        counts = dict(con.sql(
            f"SELECT least(CAST(floor((y - {lo!r}) / {width!r}) AS INTEGER), {bins - 1}) AS b, count(*) "
            f"FROM {scaled} GROUP BY b", params=params).fetchall())
        nb = bins if hi > lo else 1
        stats.histogram = [((lo + i * width) * k, (lo + (i + 1) * width) * k, counts.get(i, 0)) for i in range(nb)]
    return stats


def _times(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


# ---------------------------------------------------------------- presentation


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.6g}"


def text(summary: Summary, width: int = 40) -> str:
    """The summary for a terminal, with text histograms."""
    out = [f"filter: {summary.filter or '(everything)'}", f"configurations: {summary.count}", ""]
    if summary.elements:
        out.append("elements: " + ", ".join(f"{e} {n}" for e, n in summary.elements))
        out.append("")
    for s in summary.numeric:
        q = " ".join(f"p{int(k * 100)}={_num(v)}" for k, v in s.quantiles.items())
        out.append(f"{s.key}: n={s.count} min={_num(s.min)} max={_num(s.max)} mean={_num(s.mean)} "
                   f"std={_num(s.std)} {q}")
        peak = max((c for _, _, c in s.histogram), default=0)
        for low, high, c in s.histogram:
            bar = "#" * (round(width * c / peak) if peak else 0)
            out.append(f"  {_num(low):>12} .. {_num(high):<12} {bar} {c}")
        out.append("")
    for key, rows in summary.categorical.items():
        out.append(f"{key}: " + ", ".join(f"{v} ({n})" for v, n in rows))
    return "\n".join(out).rstrip() + "\n"


def plot(summary: Summary, path: str) -> None:
    """Histograms as a PNG (matplotlib) or a self-contained HTML page (inline SVG)."""
    if path.endswith(".html"):
        with open(path, "w") as f:
            f.write(_html(summary))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(summary.numeric))
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.6 * n), squeeze=False)
    for ax, s in zip(axes[:, 0], summary.numeric):
        if s.histogram:
            ax.bar([lo for lo, _, _ in s.histogram], [c for _, _, c in s.histogram],
                   width=[hi - lo for lo, hi, _ in s.histogram], align="edge", color="#4472c4")
        ax.set_title(f"{s.key} (n={s.count})", fontsize=10)
        ax.set_ylabel("configurations")
    fig.suptitle(f"{summary.filter or 'all configurations'}: {summary.count}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(summary: Summary) -> str:
    import html

    parts = [f"<h1>{html.escape(summary.filter or 'all configurations')}</h1><p>{summary.count} configurations</p>"]
    for s in summary.numeric:
        peak = max((c for *_, c in s.histogram), default=1) or 1
        bars = "".join(
            f'<rect x="{i * 20}" y="{150 - 150 * c / peak:.1f}" width="18" height="{150 * c / peak:.1f}" fill="#4472c4">'
            f"<title>{_num(lo)} .. {_num(hi)}: {c}</title></rect>"
            for i, (lo, hi, c) in enumerate(s.histogram))
        parts.append(f"<h2>{html.escape(s.key)}</h2><p>min {_num(s.min)}, max {_num(s.max)}, mean {_num(s.mean)}</p>"
                     f'<svg width="{20 * len(s.histogram)}" height="150">{bars}</svg>')
    return "<!doctype html><meta charset=utf-8><title>mliplake summary</title>" + "".join(parts)
