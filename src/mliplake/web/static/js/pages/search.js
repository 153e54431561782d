// Search: the filter language in one box (key completion from /keys), a live count, cursor pages,
// downloads of the whole result.
import { get, exportUrl, ApiError } from "../api.js";
import { h, fmt, table, errorBox, route, debounce, announce, withQuery } from "../ui.js";

// the language's own fields (mliplake.filters.FIELDS) and words; data keys come from /keys
const FIELDS = [
  ["id", "string", "configuration id"], ["dataset", "string"], ["deposit_id", "string"], ["source_file", "string"],
  ["frame_index", "integer"], ["nsites", "integer", "atoms"], ["nelements", "integer"], ["nperiodic_dimensions", "integer"],
  ["energy", "number", "eV"], ["energy_per_atom", "number", "eV"], ["max_force", "number", "eV/Å"], ["volume", "number", "Å³"],
  ["has_energy", "bool"], ["has_forces", "bool"], ["has_stress", "bool"], ["has_virial", "bool"],
  ["elements", "elements", 'HAS "Si"'], ["elements_ratios", "list"], ["chemical_formula_reduced", "string"],
  ["chemical_formula_hill", "string"], ["chemical_formula_anonymous", "string"], ["structure_hash", "string"],
];
const WORDS = ["AND", "OR", "NOT", "HAS", "HAS ALL", "HAS ANY", "HAS ONLY", "IS KNOWN", "IS UNKNOWN", "CONTAINS",
  "STARTS WITH", "ENDS WITH", "TRUE", "FALSE"];
const EXAMPLES = ['elements HAS "Si"', 'elements HAS ALL "C","H","O" AND nsites < 20', "max_force > 5",
  'info.config_type = "IsolatedAtom"', "has_stress = TRUE AND energy_per_atom < -5"];
const COLUMNS = ["id", "dataset", "chemical_formula_reduced", "nsites", "energy_per_atom", "max_force"];

let KEYS = null;
async function completions() {
  if (KEYS) return KEYS;
  const out = FIELDS.map(([name, kind, note]) => ({ name, kind: note ? `${kind} · ${note}` : kind }));
  const seen = new Set(out.map((o) => o.name));
  try {
    const keys = (await get("keys")).data;
    for (const k of keys) {
      const name = k.category === "info" ? `info.${k.key}` : k.category === "label" ? `has_${k.key}` : k.key;
      if (seen.has(name)) continue;
      seen.add(name);
      out.push({ name, kind: `${k.category} · ${k.dtype}${k.unit ? " · " + k.unit : ""} · ${fmt(k.configurations)} configurations` });
    }
  } catch { /* the fields above still complete */ }
  for (const w of WORDS) out.push({ name: w, kind: "operator" });
  KEYS = out;
  return out;
}

export async function render(view, args, query) {
  const state = { filter: query.get("filter") || "", limit: Number(query.get("limit")) || 25, cursors: [null], page: 0 };
  const input = h("input", { type: "text", id: "filter", value: state.filter, autocomplete: "off", spellcheck: "false",
    role: "combobox", "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": "filter-suggest",
    "aria-describedby": "filter-help live-count", placeholder: 'elements HAS "Si" AND nsites < 64', class: "mono" });
  const list = h("ul", { id: "filter-suggest", class: "suggest", role: "listbox", "aria-label": "Keys", hidden: true });
  const live = h("p", { id: "live-count", class: "live-count", "aria-live": "polite" });
  const limitSel = h("select", { id: "page-size", onchange: () => { state.limit = Number(limitSel.value); run(); } },
    [25, 50, 100, 250].map((n) => h("option", { value: n, selected: n === state.limit, text: String(n) })));
  const dlBox = h("div", { class: "row downloads" });
  const results = h("div", { class: "results", "aria-busy": "false" });
  const form = h("form", { role: "search", class: "card", onsubmit: (e) => { e.preventDefault(); close(); state.filter = input.value.trim(); run(); } },
    h("label", { for: "filter", text: "Filter" }),
    h("div", { class: "filter-box row" }, input, h("button", { type: "submit", id: "run-search", text: "Search" }), list),
    h("p", { id: "filter-help", class: "muted" }, "The OPTIMADE filter language with the lake's keys (",
      h("code", { text: "info.<key>" }), "). Type to complete keys: ↑ ↓ to choose, Enter or Tab to take one, Esc to close."),
    live,
    h("p", { class: "examples" }, "Examples: ", EXAMPLES.map((ex) => [h("button", { type: "button", class: "link mono",
      onclick: () => { input.value = ex; state.filter = ex; count(); run(); } , text: ex }), " "])),
    h("div", { class: "row" }, h("label", { for: "page-size", text: "Rows per page" }), limitSel));
  view.append(h("h1", { text: "Search configurations" }), form, dlBox, results);

  // ---- completion
  let items = [], active = -1;
  function tokenAt() {
    const upto = input.value.slice(0, input.selectionStart ?? input.value.length);
    if ((upto.match(/"/g) || []).length % 2) return null; // inside a string
    const m = upto.match(/[A-Za-z_][A-Za-z0-9_.]*$/);
    return m ? { text: m[0], start: upto.length - m[0].length, end: upto.length } : null;
  }
  async function suggest() {
    const tok = tokenAt();
    if (!tok) return close();
    const all = await completions();
    const t = tok.text.toLowerCase();
    items = all.filter((c) => c.name.toLowerCase().startsWith(t) && c.name.toLowerCase() !== t).slice(0, 12);
    if (!items.length) return close();
    active = 0;
    list.replaceChildren(...items.map((c, i) => h("li", { id: `sg-${i}`, role: "option", "aria-selected": i === active ? "true" : "false",
      onmousedown: (e) => { e.preventDefault(); accept(i); } }, h("span", { class: "mono", text: c.name }), h("span", { class: "kind", text: c.kind }))));
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    input.setAttribute("aria-activedescendant", "sg-0");
  }
  function close() {
    list.hidden = true;
    items = [];
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }
  function move(d) {
    active = (active + d + items.length) % items.length;
    [...list.children].forEach((li, i) => li.setAttribute("aria-selected", i === active ? "true" : "false"));
    input.setAttribute("aria-activedescendant", `sg-${active}`);
    list.children[active].scrollIntoView({ block: "nearest" });
  }
  function accept(i) {
    const tok = tokenAt();
    if (!tok) return close();
    const word = items[i].name;
    const before = input.value.slice(0, tok.start), after = input.value.slice(tok.end);
    input.value = before + word + " " + after.replace(/^\s+/, "");
    const at = (before + word + " ").length;
    input.setSelectionRange(at, at);
    close();
    count();
  }
  input.addEventListener("keydown", (e) => {
    if (list.hidden) return;
    if (e.key === "ArrowDown") { e.preventDefault(); move(1); }
    else if (e.key === "ArrowUp") { e.preventDefault(); move(-1); }
    else if (e.key === "Enter" || e.key === "Tab") { e.preventDefault(); accept(active); }
    else if (e.key === "Escape") { e.preventDefault(); close(); }
  });
  input.addEventListener("input", () => { suggest(); count(); });
  input.addEventListener("blur", () => setTimeout(close, 150));

  // ---- live count
  let countSeq = 0;
  const count = debounce(async () => {
    const seq = ++countSeq, f = input.value.trim();
    try {
      const r = await get("count", { filter: f });
      if (seq !== countSeq) return;
      live.className = "live-count";
      live.textContent = `${fmt(r.data.count)} configuration${r.data.count === 1 ? "" : "s"} match${r.data.count === 1 ? "es" : ""}`;
    } catch (err) {
      if (seq !== countSeq) return;
      live.className = "live-count bad";
      live.replaceChildren(err instanceof ApiError && err.problem.detail
        ? h("pre", { class: "mono", text: err.problem.detail }) : String(err.message || err));
    }
  }, 250);

  // ---- results, a page at a time
  async function run(cursorIndex = 0) {
    if (cursorIndex === 0) state.cursors = [null];
    state.page = cursorIndex;
    history.replaceState(null, "", withQuery("#/search", { filter: state.filter, limit: state.limit === 25 ? "" : state.limit }));
    dlBox.replaceChildren(h("span", { text: "Download the whole result: " }),
      h("a", { class: "button secondary", id: "dl-extxyz", href: exportUrl(state.filter, "extxyz"), download: "", text: "extxyz" }),
      h("a", { class: "button secondary", id: "dl-parquet", href: exportUrl(state.filter, "parquet"), download: "", text: "Parquet" }));
    results.setAttribute("aria-busy", "true");
    let r;
    try {
      r = await get("search", { filter: state.filter, limit: state.limit, cursor: state.cursors[cursorIndex] || undefined,
        columns: COLUMNS.join(",") });
    } catch (err) {
      results.replaceChildren(errorBox(err, "The search failed"));
      results.setAttribute("aria-busy", "false");
      return;
    }
    const meta = r.meta;
    if (meta.next_cursor) state.cursors[cursorIndex + 1] = meta.next_cursor;
    const cols = [
      { key: "id", label: "Configuration", header: true, render: (c) => h("a", { class: "mono", href: route("configuration", c.dataset, c.id), text: c.id.slice(0, 12) + "…", title: c.id, "aria-label": `configuration ${c.id}` }) },
      { key: "dataset", label: "Dataset", render: (c) => h("a", { href: route("dataset", c.dataset), text: c.dataset }) },
      { key: "chemical_formula_reduced", label: "Formula" },
      { key: "nsites", label: "Atoms", num: true },
      { key: "energy_per_atom", label: "Energy / atom (eV)", num: true },
      { key: "max_force", label: "Max force (eV/Å)", num: true },
    ];
    const first = cursorIndex * state.limit + 1, lastRow = cursorIndex * state.limit + r.data.length;
    const pager = h("nav", { class: "pager", "aria-label": "Result pages" },
      h("button", { type: "button", id: "prev-page", disabled: cursorIndex === 0, onclick: () => run(cursorIndex - 1), text: "Previous" }),
      h("span", { text: r.data.length ? `Rows ${fmt(first)}–${fmt(lastRow)} of ${fmt(meta.data_returned)}` : "No rows" }),
      h("button", { type: "button", id: "next-page", disabled: !meta.more_data_available, onclick: () => run(cursorIndex + 1), text: "Next" }));
    results.replaceChildren(table(cols, r.data, { caption: `Configurations (page ${cursorIndex + 1})`, rowKey: (c) => c.id,
      empty: "No configuration matches this filter." }), pager);
    results.setAttribute("aria-busy", "false");
    announce(`${meta.data_returned} configurations; showing ${r.data.length}`);
  }

  count();
  await run();
}
