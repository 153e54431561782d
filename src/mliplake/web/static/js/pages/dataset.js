// A dataset: its card, keys, histograms, elements, sample structures, downloads; for its owners,
// deposits, quarantine and who may see it.
import { get, put, me, exportUrl, filterOf, ApiError } from "../api.js";
import { h, fmt, table, errorBox, badge, route, section, dl, parseJSON, methodText, announce, withQuery } from "../ui.js";
import { histogram, bars } from "../plots.js";
import { periodicTable } from "../ptable.js";

const UNITS = { energy_per_atom: "eV", energy: "eV", max_force: "eV/Å", volume: "Å³", nsites: "atoms" };
const DEFAULT_KEYS = ["energy_per_atom", "max_force", "nsites"];

export async function render(view, [name]) {
  const filter = filterOf(name);
  // Every request of the page needs only the dataset's name: all of them at once, not one after the
  // card (the server answers each through the caller's scope: a dataset one may not see is empty there).
  const dsP = get(`datasets/${encodeURIComponent(name)}`);
  const summaryP = get("summary", { filter, keys: DEFAULT_KEYS.join(","), bins: 30 }).then((r) => r.data);
  const keysP = datasetKeys(name);
  const samplesP = get("search", { filter, limit: 8, columns: "id,dataset,chemical_formula_reduced,nsites,energy_per_atom,max_force" });
  const countP = get("count", { filter });
  const userP = me();
  for (const p of [summaryP, keysP, samplesP, countP]) p.catch(() => {}); // handled where drawn (or not drawn: no dataset)
  let ds;
  try {
    ds = (await dsP).data;
  } catch (err) {
    view.append(h("h1", { text: "Dataset not found" }), err instanceof ApiError && err.status === 404
      ? h("p", { class: "error", role: "alert", text: "There is no such dataset, or you may not see it." }) : errorBox(err));
    return;
  }
  const card = ds.card || {};
  document.title = `${name} · mliplake`;
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/catalogue", text: "Catalogue" }), " › ", name),
    h("h1", {}, name, " ", badge(ds.visibility, ds.embargo_until)),
    h("p", { class: "lede", text: ds.title || card.title || "" }));
  const grid = h("div", { class: "cards" });
  view.append(grid);

  // ---- card
  const links = (card.links || []).map((u) => h("a", { href: u, rel: "noopener noreferrer", text: u }));
  const doi = card.doi ? h("a", { href: `https://doi.org/${card.doi}`, rel: "noopener noreferrer", text: card.doi }) : null;
  const authors = card.authors || [];
  const year = (card.created_at || "").slice(0, 4);
  const citation = authors.length || card.doi
    ? `${authors.join(", ")}${year ? ` (${year})` : ""}. ${ds.title || name}.${card.doi ? ` doi:${card.doi}` : ""}` : "";
  grid.append(section("About",
    card.description ? h("p", { text: card.description }) : null,
    dl([["Authors", authors.join(", ")], ["Licence", ds.license], ["Method", methodText(ds.method)],
      ["Sampling", card.sampling], ["DOI", doi], ["Links", links.length ? h("span", {}, links.map((a) => [a, " "])) : null],
      ["Owner", ds.owner], ["Visibility", ds.visibility === "embargoed" ? `embargoed until ${String(ds.embargo_until).slice(0, 10)}` : ds.visibility],
      ["Configurations", ds.configurations], ["Atoms", ds.atoms], ["Elements", (ds.elements || []).join(" ")],
      ["Labels", (ds.labels || []).join(", ")], ["Quarantined", ds.quarantined], ["Duplicates", ds.duplicates],
      ["Quality score", card.quality_score], ["Updated", (card.updated_at || "").replace("T", " ").slice(0, 19)]]),
    citation ? h("div", {}, h("h3", { text: "Cite" }), h("pre", { class: "cite", text: citation })) : null));

  const quality = parseJSON(card.quality);
  if (quality && typeof quality === "object") {
    grid.append(section("Quality", table([
      { key: "k", label: "Check", header: true }, { key: "value", label: "Score", num: true }, { key: "why", label: "Why" }],
    Object.entries(quality).map(([k, v]) => ({ k: k.replace(/_/g, " "), value: v.value, why: v.why })), { caption: "Quality checks" })));
  }

  // ---- downloads
  const extra = h("input", { type: "text", id: "subset-filter", class: "mono", placeholder: "nsites < 40", "aria-describedby": "subset-help" });
  const subsetLinks = h("div", { class: "row" });
  const subsetCount = h("span", { class: "muted", "aria-live": "polite" });
  const drawSubset = async (first) => {
    const f = extra.value.trim() ? `${filter} AND (${extra.value.trim()})` : filter;
    subsetLinks.replaceChildren(
      h("a", { class: "button secondary", id: "subset-extxyz", href: exportUrl(f, "extxyz"), download: "", text: "Subset as extxyz" }),
      h("a", { class: "button secondary", href: exportUrl(f, "parquet"), download: "", text: "Subset as Parquet" }),
      h("a", { href: withQuery("#/search", { filter: f }), text: "Open in Search" }), subsetCount);
    try { subsetCount.textContent = `${fmt((await (first || get("count", { filter: f }))).data.count)} configurations`; }
    catch (err) { subsetCount.textContent = err.problem && err.problem.detail ? err.problem.detail.split("\n")[0] : String(err); }
  };
  extra.addEventListener("change", () => drawSubset());
  grid.append(section("Download",
    h("div", { class: "row" },
      h("a", { class: "button", id: "dl-all-extxyz", href: exportUrl(filter, "extxyz"), download: "", text: "All as extxyz" }),
      h("a", { class: "button", href: exportUrl(filter, "parquet"), download: "", text: "All as Parquet" })),
    h("div", { class: "field" }, h("label", { for: "subset-filter", text: "Only configurations where" }), extra,
      h("span", { id: "subset-help", class: "hint", text: "A filter, e.g. nsites < 40 or info.config_type = \"md\"; press Enter." })),
    subsetLinks));
  drawSubset(countP);

  // ---- elements, histograms, keys, samples: in parallel
  const elBox = section("Elements", h("p", { class: "loading", text: "Loading…" }));
  const histBox = h("div", { class: "plots", id: "histograms" });
  const keyPick = h("select", { id: "hist-key" });
  const plotsSection = section("Distributions",
    h("div", { class: "row" }, h("label", { for: "hist-key", text: "Add a histogram of" }), keyPick,
      h("button", { type: "button", class: "secondary", onclick: () => addKey(keyPick.value), text: "Add" })), histBox);
  const keysBox = section("Keys", h("p", { class: "loading", text: "Loading…" }));
  const samplesBox = section("Sample structures", h("p", { class: "loading", text: "Loading…" }));
  view.append(elBox, plotsSection);
  view.append(keysBox, samplesBox);

  const shown = new Set();
  async function addKey(key, into = histBox) {
    if (!key || shown.has(key)) return;
    shown.add(key);
    try {
      const s = (await get("summary", { filter, keys: key, bins: 30 })).data;
      const num = (s.numeric || []).find((n) => n.key === key);
      if (num && num.histogram && num.histogram.length) into.append(histogram(num.histogram, { title: key, unit: UNITS[key] || "" }));
      else if (s.categorical && s.categorical[key]) into.append(bars(s.categorical[key], { title: key }));
      else into.append(h("p", { class: "muted", text: `${key}: no values` }));
      announce(`Histogram of ${key} added`);
    } catch (err) { into.append(errorBox(err, key)); }
  }

  const jobs = [
    summaryP.then((s) => {
      for (const key of DEFAULT_KEYS) {
        const num = (s.numeric || []).find((n) => n.key === key);
        if (num && num.histogram && num.histogram.length) { shown.add(key); histBox.append(histogram(num.histogram, { title: key, unit: UNITS[key] || "" })); }
      }
      const counts = Object.fromEntries(s.elements || []);
      elBox.replaceChildren(h("h2", { id: "s-elements", text: "Elements" }),
        h("p", { class: "muted", text: "Configurations containing each element." }),
        h("div", { class: "ptable-wrap" }, periodicTable({ label: `Elements of ${name}: configurations containing each`,
          heat: counts, unit: "configurations", compact: true })));
    }).catch((err) => histBox.append(errorBox(err, "Statistics"))),
    keysP.then((counted) => {
      const pick = counted.filter((k) => k.n && ((k.category === "derived" && ["number", "integer"].includes(k.dtype)) ||
        (k.category === "info" && ["number", "integer", "string"].includes(k.dtype))));
      keyPick.replaceChildren(...pick.map((k) => h("option", { value: k.field, text: k.field })));
      keysBox.replaceChildren(h("h2", { id: "s-keys", text: "Keys" }), table([
        { key: "field", label: "Key", header: true, render: (k) => h("code", { text: k.field }) },
        { key: "category", label: "Kind" }, { key: "dtype", label: "Type" }, { key: "unit", label: "Unit" },
        { key: "n", label: "Configurations", num: true },
        { key: "share", label: "Share", num: true, render: (k) => k.n === null ? "–" : `${Math.round((100 * k.n) / Math.max(1, ds.configurations))}%` },
      ], counted, { caption: "How often each key is present", className: "keys-table" }));
    }).catch((err) => keysBox.append(errorBox(err))),
    samplesP.then((r) => {
      samplesBox.replaceChildren(h("h2", { id: "s-sample-structures", text: "Sample structures" }), table([
        { key: "id", label: "Configuration", header: true, render: (c) => h("a", { class: "mono sample-link", href: route("configuration", c.dataset, c.id), text: c.id.slice(0, 12) + "…", "aria-label": `configuration ${c.id}` }) },
        { key: "chemical_formula_reduced", label: "Formula" }, { key: "nsites", label: "Atoms", num: true },
        { key: "energy_per_atom", label: "E / atom (eV)", num: true }, { key: "max_force", label: "Max force (eV/Å)", num: true }],
      r.data, { caption: "The first configurations" }), h("p", {}, h("a", { href: withQuery("#/search", { filter }), text: "All configurations in Search" })));
    }).catch((err) => samplesBox.append(errorBox(err))),
  ];

  // ---- versions and deposits (everyone who sees the dataset); owners: quarantine and visibility
  const deposits = ds.deposits || [];
  view.append(section("Versions and deposits", table([
    { key: "deposit_id", label: "Deposit", header: true, render: (d) => h("code", { text: d.deposit_id }) },
    { key: "created_at", label: "Deposited", render: (d) => String(d.created_at || "").replace("T", " ").slice(0, 19) },
    { key: "status", label: "Status" }, { key: "frames_read", label: "Frames read", num: true },
    { key: "stored", label: "Stored", num: true }, { key: "duplicates", label: "Duplicates", num: true },
    { key: "quarantined", label: "Quarantined", num: true }, { key: "files", label: "Files", num: true }],
  deposits, { caption: "Each deposit is a version of the dataset", empty: "No deposits." })));

  const user = await userP;
  const manages = user.kind !== "anonymous" && (user.name === ds.owner || (user.roles || []).some((r) => r === "admin" || r === "curator"));
  if (manages) view.append(await ownerPanel(name, ds, deposits));
  await Promise.all(jobs);
}

async function ownerPanel(name, ds, deposits) {
  const box = section("Manage (owner)");
  box.classList.add("owner");
  // visibility and embargo
  const vis = h("select", { id: "vis-select" }, ["public", "private", "embargoed"].map((v) => h("option", { value: v, selected: ds.visibility === v, text: v })));
  const groups = h("input", { type: "text", id: "vis-groups", placeholder: "g1, g2" });
  const until = h("input", { type: "date", id: "vis-until", value: ds.embargo_until ? String(ds.embargo_until).slice(0, 10) : "" });
  const msg = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "vis-form", onsubmit: async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    try {
      const body = { visibility: vis.value, groups: groups.value ? groups.value.split(",").map((g) => g.trim()).filter(Boolean) : null,
        embargo_until: vis.value === "embargoed" ? until.value || null : null };
      await put(`datasets/${encodeURIComponent(name)}/visibility`, body);
      msg.replaceChildren(h("p", { class: "ok", text: `Saved: ${name} is now ${vis.value}${body.embargo_until ? " until " + body.embargo_until : ""}.` }));
    } catch (err) { msg.replaceChildren(errorBox(err, "Not saved")); }
  } },
  h("fieldset", {}, h("legend", { text: "Who may see this dataset" }),
    h("div", { class: "grid2" },
      h("div", { class: "field" }, h("label", { for: "vis-select", text: "Visibility" }), vis),
      h("div", { class: "field" }, h("label", { for: "vis-groups", text: "Groups that may see it (private)" }), groups),
      h("div", { class: "field" }, h("label", { for: "vis-until", text: "Embargo until (embargoed)" }), until)),
    h("button", { type: "submit", text: "Save visibility" })), msg);
  box.append(form);
  // quarantine reasons
  const quarantined = deposits.filter((d) => d.quarantined);
  if (!quarantined.length) box.append(h("p", { class: "muted", text: "No frame of this dataset is in quarantine." }));
  for (const d of quarantined) {
    try {
      const rows = (await get(`deposits/${encodeURIComponent(d.deposit_id)}/quarantine`)).data;
      box.append(table([{ key: "source_file", label: "File", header: true }, { key: "frame_index", label: "Frame", num: true },
        { key: "reason", label: "Reason" }, { key: "detail", label: "Detail" }], rows,
      { caption: `Quarantine of ${d.deposit_id}: ${rows.length} frame(s)`, className: "quarantine" }));
    } catch (err) { box.append(errorBox(err, d.deposit_id)); }
  }
  return box;
}

// the dataset's keys and how many configurations have each: two read-only SQL queries over its rows
const KINDS = { label: "label", derived: "derived", info: "info", arrays: "per atom" };

// the keys of one dataset with their counts (GET /keys?dataset=: numbers the server keeps per dataset)
async function datasetKeys(name) {
  const rows = (await get("keys", { dataset: name })).data;
  return rows.map((k) => ({
    field: k.category === "label" ? `has_${k.key}` : k.category === "info" ? `info.${k.key}` : k.category === "arrays" ? `arrays.${k.key}` : k.key,
    category: KINDS[k.category] || k.category, dtype: k.dtype, unit: k.unit, n: k.configurations }));
}
