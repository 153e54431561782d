// The leaderboard (sortable by any metric) and model cards (training set down to the exact rows,
// hyperparameters, benchmark results, per-element force errors on a periodic table, lineage).
import { get, request, API, ApiError } from "../api.js";
import { h, fmt, table, resort, errorBox, route, section, dl, withQuery, announce } from "../ui.js";
import { periodicTable } from "../ptable.js";
import { lines } from "../plots.js";

const HIGHER_BETTER = new Set(["energy_r2", "forces_r2", "created_at"]);
const meV = (v) => (v === null || v === undefined ? "–" : fmt(v * 1000, 3));

const SHOWN = 100; // rows drawn at first: a long table is drawn in full on request

function more(total, shown, onAll) {
  if (total <= shown) return "";
  return h("p", { class: "row" }, `The first ${fmt(shown)} of ${fmt(total)}. `,
    h("button", { type: "button", class: "secondary show-all", onclick: onAll, text: `Show all ${fmt(total)}` }));
}

export async function leaderboard(view, args, query) {
  const state = { sort: query.get("sort") || "forces_mae", descending: query.get("descending") === "true", benchmark: query.get("benchmark") || "" };
  const benchSel = h("select", { id: "lb-benchmark", onchange: () => { state.benchmark = benchSel.value; load(); } });
  const body = h("div", { "aria-live": "polite" });
  const all = h("div", {});
  view.append(h("h1", { text: "Leaderboard" }),
    h("p", { class: "lede", text: "Models on their benchmarks. Errors in meV (energy per atom, force components); sort by any column." }),
    h("div", { class: "row" }, h("label", { for: "lb-benchmark", text: "Benchmark" }), benchSel), body, all);
  let registryShown = SHOWN;
  const drawRegistry = (data) => all.replaceChildren(section("All models", table([
    { key: "model_id", label: "Model", header: true, render: (m) => h("a", { href: route("model", m.model_id), text: m.model_id }) },
    { key: "architecture", label: "Architecture" }, { key: "elements", label: "Elements", render: (m) => (m.elements || []).join(" ") },
    { key: "parameters", label: "Parameters", num: true },
    { key: "training_set", label: "Training set", render: (m) => m.training_set ? `${m.training_set.name} @${String(m.training_set.version).slice(0, 8)}` : "–" },
    { key: "created_at", label: "Created", render: (m) => String(m.created_at || "").slice(0, 10) }],
  data.slice(0, registryShown), { caption: "Every registered model you may see, newest first", rowKey: (m) => m.model_id, className: "models", empty: "No model yet." }),
  more(data.length, registryShown, () => { registryShown = data.length; drawRegistry(data); })));
  const registry = get("models").then((r) => drawRegistry(r.data)).catch((err) => all.replaceChildren(errorBox(err, "Models")));
  let shown = SHOWN;
  let benchmarksKnown = false;

  let fetched = null; // the rows of the chosen benchmark: a new sort order needs no new request
  let drawn = null; // the table on the page and how many rows it shows: a new order redraws its rows only
  async function load(refocus = false, refetch = true) {
    history.replaceState(null, "", withQuery("#/leaderboard", { sort: state.sort === "forces_mae" ? "" : state.sort,
      descending: state.descending ? "true" : "", benchmark: state.benchmark }));
    let r;
    if (refetch || !fetched) {
      try {
        r = await get("leaderboard", { sort: state.sort, descending: state.descending, benchmark: state.benchmark || undefined });
      } catch (err) { body.replaceChildren(errorBox(err, "The leaderboard could not be read")); return; }
      fetched = r;
    } else {
      r = { ...fetched, data: sortRows(fetched.data, state.sort, state.descending) };
      fetched = r;
    }
    if (!benchmarksKnown) {
      const names = [...new Set(r.data.map((x) => x.benchmark))].sort();
      benchSel.replaceChildren(h("option", { value: "", text: "all benchmarks" }), ...names.map((n) => h("option", { value: n, selected: n === state.benchmark, text: n })));
      benchmarksKnown = true;
    }
    const sortBy = (key) => {
      if (state.sort === key) state.descending = !state.descending;
      else { state.sort = key; state.descending = HIGHER_BETTER.has(key); }
      load(true, false);
    };
    const cols = [
      { key: "rank", label: "#", num: true, sort: false },
      { key: "model_id", label: "Model", header: true, render: (m) => h("a", { href: route("model", m.model_id), text: m.model_id }) },
      { key: "benchmark", label: "Benchmark", sort: false },
      { key: "training_set", label: "Training set", sort: false, render: (m) => `${m.training_set || "–"}${m.training_set_version ? " @" + m.training_set_version.slice(0, 8) : ""}` },
      { key: "parameters", label: "Parameters", num: true },
      { key: "energy_mae", label: "Energy MAE", num: true, render: (m) => meV(m.energy_mae) },
      { key: "energy_rmse", label: "Energy RMSE", num: true, render: (m) => meV(m.energy_rmse) },
      { key: "forces_mae", label: "Force MAE", num: true, render: (m) => meV(m.forces_mae) },
      { key: "forces_rmse", label: "Force RMSE", num: true, render: (m) => meV(m.forces_rmse) },
      { key: "stress_mae", label: "Stress MAE", num: true, render: (m) => meV(m.stress_mae) },
      { key: "energy_r2", label: "Energy R²", num: true, render: (m) => fmt(m.energy_r2, 4) },
      { key: "forces_r2", label: "Force R²", num: true, render: (m) => fmt(m.forces_r2, 4) },
      { key: "seconds", label: "Seconds", num: true },
      { key: "created_at", label: "Created", render: (m) => String(m.created_at || "").slice(0, 10) },
    ];
    const rows = r.data.slice(0, shown).map((m, i) => ({ ...m, rank: i + 1 }));
    const opts = { caption: `Sorted by ${state.sort.replace(/_/g, " ")}, ${state.descending ? "highest" : "lowest"} first`,
      sortKey: state.sort, descending: state.descending, onSort: sortBy, rowKey: (m) => `${m.model_id}/${m.benchmark}`,
      empty: "No model has been benchmarked yet.", className: "leaderboard" };
    if (!refetch && drawn && drawn.shown === shown && body.contains(drawn.wrap)) {
      resort(drawn.wrap, cols, rows, opts); // the same rows in a new order: the header (and its focus) stays
    } else {
      const wrap = table(cols, rows, opts);
      drawn = { wrap, shown };
      body.replaceChildren(wrap,
        more(r.data.length, shown, () => { shown = r.data.length; load(false, false); }),
        h("p", { class: "muted", text: "Energy errors in meV/atom, forces in meV/Å per component, stress in meV/Å³." }));
      const btn = body.querySelector(`button[data-sort="${state.sort}"]`);
      if (btn && refocus) btn.focus(); // the table was redrawn under the button just pressed
    }
    announce(`Leaderboard sorted by ${state.sort.replace(/_/g, " ")}, ${state.descending ? "descending" : "ascending"}`);
  }
  await Promise.all([load(), registry]);
}

// the server's order: the key (missing values last), then the model id
function sortRows(rows, key, descending) {
  const dir = descending ? -1 : 1;
  const byId = (a, b) => String(a.model_id).localeCompare(String(b.model_id));
  return [...rows].sort((a, b) => {
    const x = a[key], y = b[key];
    const xMissing = x === null || x === undefined, yMissing = y === null || y === undefined;
    if (xMissing || yMissing) return xMissing === yMissing ? byId(a, b) : (xMissing ? 1 : -1);
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return c ? dir * c : byId(a, b);
  });
}

export async function model(view, [mid]) {
  let card;
  try {
    card = (await get(`models/${encodeURIComponent(mid)}`)).data;
  } catch (err) {
    view.append(h("h1", { text: "Model not found" }), err instanceof ApiError && err.status === 404
      ? h("p", { class: "error", role: "alert", text: "There is no such model, or you may not see it (a model is as private as its training data)." })
      : errorBox(err));
    return;
  }
  document.title = `${card.name || card.model_id} · mliplake`;
  const ts = card.training_set || {};
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/leaderboard", text: "Leaderboard" }), " › ", card.model_id),
    h("h1", {}, card.name || card.model_id, " ", h("span", { class: "muted mono", text: card.model_id })),
    card.description ? h("p", { class: "lede", text: card.description }) : null);
  const grid = h("div", { class: "cards" });
  view.append(grid);
  grid.append(section("Model", dl([
    ["Architecture", card.architecture], ["Parameters", card.parameters], ["Elements", (card.elements || []).join(" ")],
    ["Cut-off radius", card.r_max ? `${card.r_max} Å` : null], ["Licence", card.license],
    ["Created", String(card.created_at || "").replace("T", " ").slice(0, 19)],
    ["Model file", h("a", { href: `${API}/models/${encodeURIComponent(card.model_id)}/file`, download: "", text: "Download (MACE)" })],
    ["Predict", h("a", { href: withQuery("#/predict", { model: card.model_id }), text: "Try it on a structure" })],
  ])));

  // training set: the exact rows and the data version
  const tsBox = section("Training set", dl([
    ["Name", ts.name], ["Version", ts.version ? h("code", { text: ts.version }) : null],
    ["Content hash", ts.content_hash ? h("code", { class: "hash", text: ts.content_hash }) : null],
    ["Filter", ts.filter ? h("a", { href: withQuery("#/search", { filter: ts.filter }), class: "mono", text: ts.filter }) : null],
    ["Configurations", ts.counts ? Object.entries(ts.counts).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") : null],
  ]));
  grid.append(tsBox);
  get(`models/${encodeURIComponent(card.model_id)}/lineage`).then((r) => {
    const lin = r.data, m = lin.training_set || {};
    const ids = Object.values(lin.config_ids || {}).flat();
    const status = h("span", { class: "muted", "aria-live": "polite" });
    const fetchRows = async () => {
      status.textContent = "Preparing…";
      try {
        const resp = await request("POST", "export", { body: { ids, format: "extxyz" }, raw: true });
        const blob = await resp.blob();
        const a = h("a", { href: URL.createObjectURL(blob), download: `${ts.name}-${ts.version}.xyz` });
        document.body.append(a); a.click(); a.remove();
        status.textContent = `${fmt(ids.length)} configurations downloaded`;
      } catch (err) { status.textContent = err.message; }
    };
    tsBox.append(dl([
      ["Lake version", m.lake_version], ["Source datasets", h("span", {}, (m.source_datasets || []).map((d) => [h("a", { href: route("dataset", d), text: d }), " "]))],
      ["Source deposits", Object.keys(m.source_deposits || {}).map((d) => d).join(", ")],
      ["Split", m.spec && m.spec.split ? `${m.spec.split.method}, seed ${m.spec.split.seed}` : null],
      ["Materialised", m.created_at], ["Code", m.code_version],
    ]), h("div", { class: "row" }, h("button", { type: "button", class: "secondary", id: "training-rows", onclick: fetchRows,
      text: `Download the exact ${fmt(ids.length)} training rows (extxyz)` }), status));
    const retracted = Object.entries(lin.retracted || {});
    if (retracted.length) tsBox.append(h("p", { class: "error", role: "note", text: `Retracted since training: ${retracted.map(([d, r]) => `${d} (${r.retraction_reason || "no reason"})`).join("; ")}` }));
  }).catch((err) => tsBox.append(h("p", { class: "muted", text: `Lineage unavailable: ${err.message}` })));

  const hp = card.hyperparameters || {};
  grid.append(section("Hyperparameters", table([{ key: "k", label: "Hyperparameter", header: true }, { key: "v", label: "Value" }],
    Object.entries(hp).map(([k, v]) => ({ k, v: Array.isArray(v) ? v.join(" ") || "–" : fmt(v) })), { caption: "As trained" })));

  const tr = card.training || {};
  const epochs = tr.epochs || [];
  grid.append(section("Training", dl([["Time", tr.seconds ? `${fmt(tr.seconds)} s` : null], ["Device", tr.device], ["Hardware", tr.hardware],
    ["Host", tr.host], ["CPUs", tr.cpus], ["torch", tr.torch], ["mliplake", tr.mliplake], ["Launcher", tr.launcher ? tr.launcher.kind : null],
    ["Epochs", epochs.length]]),
  epochs.length > 1 ? lines([{ label: "force RMSE", points: epochs.map((e) => [e.epoch, e.rmse_f_meV_per_A]) }],
    { title: "Validation force RMSE by epoch", xLabel: "epoch", yLabel: "meV/Å" }) : null));

  // benchmarks, each with its per-element force errors on a periodic table
  for (const b of card.benchmarks || []) {
    const r = b.result || {};
    const metric = (name, g) => g ? { metric: name, n: g.n, mae: g.mae, rmse: g.rmse, r2: g.r2, bias: g.mean_error } : null;
    const rows = [metric("Energy per atom (meV)", r.energy_per_atom), metric("Force component (meV/Å)", r.forces), metric("Stress (meV/Å³)", r.stress)].filter(Boolean);
    const per = r.forces_per_element || {};
    const heat = Object.fromEntries(Object.entries(per).map(([el, v]) => [el, v.mae * 1000]));
    const pairs = Object.entries(r.energy_per_pair || {});
    view.append(section(`Benchmark: ${b.benchmark}`,
      h("p", { class: "muted", text: `${fmt(r.configurations)} configurations${r.training_set ? `, the ${r.split} split of ${r.training_set}` : ""}${r.filter ? `, filter ${r.filter}` : ""}; ${fmt(r.seconds)} s; ${fmt(r.missing_predictions)} missing predictions.` }),
      table([{ key: "metric", label: "Quantity", header: true }, { key: "n", label: "n", num: true },
        { key: "mae", label: "MAE", num: true, render: (x) => meV(x.mae) }, { key: "rmse", label: "RMSE", num: true, render: (x) => meV(x.rmse) },
        { key: "r2", label: "R²", num: true, render: (x) => fmt(x.r2, 4) }, { key: "bias", label: "Bias", num: true, render: (x) => meV(x.bias) }],
      rows, { caption: "Errors" }),
      Object.keys(heat).length ? h("div", { class: "heat-box" }, h("h3", { text: "Force MAE per element (meV/Å)" }),
        h("div", { class: "ptable-wrap" }, periodicTable({ label: `Force mean absolute error per element on ${b.benchmark}`, heat, unit: "meV/Å", compact: true })),
        table([{ key: "el", label: "Element", header: true }, { key: "n", label: "Atoms", num: true },
          { key: "mae", label: "MAE (meV/Å)", num: true, render: (x) => meV(x.mae) }, { key: "rmse", label: "RMSE (meV/Å)", num: true, render: (x) => meV(x.rmse) }],
        Object.entries(per).map(([el, v]) => ({ el, ...v })), { caption: "Force errors per element", className: "per-element" })) : null,
      pairs.length ? table([{ key: "pair", label: "Elements", header: true }, { key: "n", label: "Configurations", num: true },
        { key: "mae", label: "Energy MAE (meV/atom)", num: true, render: (x) => meV(x.mae) }],
      pairs.map(([pair, v]) => ({ pair, ...v })), { caption: "Energy errors by element pair" }) : null));
  }
  if (!(card.benchmarks || []).length) view.append(section("Benchmarks", h("p", { class: "muted", text: "Not benchmarked yet." })));
}
