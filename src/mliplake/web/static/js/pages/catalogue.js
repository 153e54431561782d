// Catalogue: datasets by words, elements (all / any / only on a periodic table), licence and facets.
import { get, exportUrl, filterOf } from "../api.js";
import { h, fmt, table, errorBox, badge, route, debounce, announce, methodText, withQuery } from "../ui.js";
import { periodicTable } from "../ptable.js";

const PAGE = 50;

export async function render(view, args, query) {
  const state = {
    q: query.get("q") || "",
    elements: new Set((query.get("elements") || "").split(",").filter(Boolean)),
    mode: query.get("mode") || "all",
    license: query.get("license") || "",
    facet: {}, // client-side facets: properties, functional
    sort: query.get("sort") || "relevance",
    page: 0,
  };
  const h1 = h("h1", { text: "Catalogue" });
  const intro = h("p", { class: "lede", text: "Datasets of atomistic configurations with their labels. Search words, pick elements, narrow by facets." });
  const qbox = h("input", { type: "search", id: "cat-q", value: state.q, placeholder: "silicon, ethanol, PBE…", autocomplete: "off" });
  const modes = h("fieldset", { class: "modes" }, h("legend", { text: "Datasets with the selected elements" }),
    ...[["all", "all of them"], ["any", "any of them"], ["only", "only these"]].map(([v, t]) =>
      h("label", { class: "radio" }, h("input", { type: "radio", name: "mode", value: v, checked: state.mode === v,
        onchange: () => { state.mode = v; update(); } }), " ", t)));
  const sortSel = h("select", { id: "cat-sort", onchange: () => { state.sort = sortSel.value; update(); } },
    ...[["relevance", "relevance"], ["quality", "quality score"], ["size", "configurations"], ["name", "name"], ["date", "recently updated"]]
      .map(([v, t]) => h("option", { value: v, selected: state.sort === v, text: t })));
  const ptWrap = h("div", { class: "ptable-wrap" });
  const selected = h("p", { class: "selected-els", "aria-live": "polite" });
  const facetsBox = h("aside", { class: "facets", "aria-label": "Facets" });
  const results = h("div", { class: "results", "aria-live": "polite", "aria-busy": "false" });
  const form = h("form", { class: "cat-form", role: "search", onsubmit: (e) => { e.preventDefault(); state.q = qbox.value; update(); } },
    h("label", { for: "cat-q", text: "Search datasets" }),
    h("div", { class: "row" }, qbox, h("button", { type: "submit", text: "Search" })),
    h("div", { class: "row" }, h("label", { for: "cat-sort", text: "Sort by " }), sortSel));
  qbox.addEventListener("input", debounce(() => { state.q = qbox.value; update(); }, 300));
  view.append(h1, intro, form,
    h("details", { class: "pt-details", open: true }, h("summary", { text: "Elements" }), modes, selected, ptWrap),
    h("div", { class: "cat-body" }, facetsBox, results));

  let last = null;
  const askOf = () => ({ q: state.q, elements: [...state.elements].join(","), mode: state.mode,
    license: state.license || undefined, sort: ["size", "date"].includes(state.sort) ? state.sort : "relevance" });
  async function update() {
    state.page = 0;
    history.replaceState(null, "", withQuery("#/catalogue", { q: state.q, elements: [...state.elements].join(","),
      mode: state.elements.size ? state.mode : "", license: state.license, sort: state.sort === "relevance" ? "" : state.sort }));
    results.setAttribute("aria-busy", "true");
    const ask = askOf();
    const key = JSON.stringify(ask);
    let res;
    try {
      res = await get("catalogue", ask);
    } catch (err) {
      results.replaceChildren(errorBox(err, "The catalogue could not be searched"));
      results.setAttribute("aria-busy", "false");
      return;
    }
    if (key !== JSON.stringify(askOf())) return; // a newer search has started
    last = { res };
    draw();
    results.setAttribute("aria-busy", "false");
  }

  function toggleElement(sym) {
    if (state.elements.has(sym)) state.elements.delete(sym); else state.elements.add(sym);
    update();
  }

  function draw() {
    const { res } = last;
    const facets = res.meta.facets || {};
    const counts = Object.fromEntries(facets.elements || []);
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.el : null;
    ptWrap.replaceChildren(periodicTable({ label: "Periodic table: select elements (numbers are datasets containing each element)",
      counts, selected: state.elements, onToggle: toggleElement }));
    if (focused) { const b = ptWrap.querySelector(`[data-el="${focused}"]`); if (b) b.focus(); }
    selected.replaceChildren(state.elements.size
      ? [`Selected: ${[...state.elements].join(", ")} `, h("button", { type: "button", class: "link", onclick: () => { state.elements.clear(); update(); }, text: "clear" })]
      : "No elements selected.");
    // facets: licence on the server; properties and functional here
    let rows = res.data.filter((d) => Object.entries(state.facet).every(([k, v]) => !v ||
      (k === "properties" ? (d.properties || []).includes(v) : d[k] === v)));
    facetsBox.replaceChildren(h("h2", { text: "Refine" }),
      ...[["license", "Licence"], ["properties", "Labels"], ["functional", "Functional"]].map(([k, label]) => {
        const items = facets[k] || [];
        const active = k === "license" ? state.license : state.facet[k];
        return h("fieldset", { class: "facet" }, h("legend", { text: label }),
          h("ul", {}, items.map(([v, n]) => h("li", {}, h("button", { type: "button", class: "facet-item" + (active === v ? " on" : ""),
            "aria-pressed": active === v ? "true" : "false", onclick: () => {
              if (k === "license") { state.license = state.license === v ? "" : v; update(); } else { state.facet[k] = state.facet[k] === v ? "" : v; draw(); }
            } }, `${v} `, h("span", { class: "count", text: `(${n})` }))))));
      }));
    if (state.sort === "quality") rows = [...rows].sort((a, b) => (b.quality_score ?? -1) - (a.quality_score ?? -1) || a.dataset.localeCompare(b.dataset));
    if (state.sort === "name") rows = [...rows].sort((a, b) => a.dataset.localeCompare(b.dataset));
    drawPage(rows);
  }

  // one page of the rows: paging redraws the table and the pager only (the periodic table and the
  // facets stay as they are: the same search)
  function drawPage(rows) {
    const total = rows.length, pages = Math.max(1, Math.ceil(total / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const shown = rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
    const cols = [
      { key: "dataset", label: "Dataset", header: true, render: (d) => [h("a", { href: route("dataset", d.dataset), text: d.dataset }), " ",
        badge(d.visibility, d.embargo_until)] },
      { key: "title", label: "Title" },
      { key: "quality_score", label: "Quality", num: true, render: (d) => qualityBar(d.quality_score) },
      { key: "configurations", label: "Configurations", num: true },
      { key: "atoms", label: "Atoms", num: true },
      { key: "elements", label: "Elements", render: (d) => (d.elements || []).join(" ") },
      { key: "properties", label: "Labels", render: (d) => (d.properties || []).join(", ") },
      { key: "method", label: "Method", render: (d) => methodText(d.method) },
      { key: "license", label: "Licence" },
      { key: "download", label: "Download", render: (d) => h("span", { class: "dl" },
        h("a", { href: exportUrl(filterOf(d.dataset), "extxyz"), download: "", "aria-label": `Download ${d.dataset} as extxyz`, text: "extxyz" }), " ",
        h("a", { href: exportUrl(filterOf(d.dataset), "parquet"), download: "", "aria-label": `Download ${d.dataset} as Parquet`, text: "Parquet" })) },
    ];
    const pager = pages > 1 ? h("nav", { class: "pager", "aria-label": "Catalogue pages" },
      h("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page--; drawPage(rows); }, text: "Previous" }),
      h("span", { text: ` Page ${state.page + 1} of ${pages} ` }),
      h("button", { type: "button", disabled: state.page >= pages - 1, onclick: () => { state.page++; drawPage(rows); }, text: "Next" })) : null;
    results.replaceChildren(h("p", { class: "count", id: "cat-count", text: `${fmt(total)} dataset${total === 1 ? "" : "s"}` }),
      table(cols, shown, { caption: "Datasets", rowKey: (d) => d.dataset, empty: "No dataset matches." }), pager || "");
    announce(`${total} datasets`);
  }
  await update();
}

function qualityBar(v) {
  if (v === null || v === undefined) return "–";
  return h("span", { class: "quality", title: `quality score ${fmt(v, 3)} of 1` },
    h("meter", { min: "0", max: "1", value: String(v), "aria-hidden": "true" }), " ", fmt(v, 2));
}
