// One configuration: the 3D view (unit cell, force arrows), labels, info and per-atom keys,
// provenance (raw file and frame), downloads as extxyz, CIF and POSCAR.
import { get, API, ApiError } from "../api.js";
import { h, fmt, table, errorBox, route, section, dl, methodText, parseJSON } from "../ui.js";
import { structureViewer } from "../viewer.js";
import { SYMBOLS } from "../ptable.js";

const MAX_ATOM_ROWS = 500;

export async function render(view, [dataset, id]) {
  let c;
  try {
    c = (await get(`configurations/${encodeURIComponent(id)}`, { dataset })).data;
  } catch (err) {
    view.append(h("h1", { text: "Configuration not found" }), err instanceof ApiError && err.status === 404
      ? h("p", { class: "error", role: "alert", text: "There is no such configuration, or you may not see it." }) : errorBox(err));
    return;
  }
  const symbols = (c.numbers || []).map((z) => SYMBOLS[z - 1] || "X");
  const cell = c.cell && c.cell.length === 9 ? c.cell : null;
  document.title = `${c.chemical_formula_hill || id} · mliplake`;
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/catalogue", text: "Catalogue" }), " › ",
      h("a", { href: route("dataset", c.dataset), text: c.dataset }), " › ", h("span", { class: "mono", text: id })),
    h("h1", {}, c.chemical_formula_hill || c.chemical_formula_reduced || "Configuration", " ",
      h("span", { class: "muted mono", text: id })));

  const base = `${API}/configurations/${encodeURIComponent(id)}?dataset=${encodeURIComponent(c.dataset)}&format=`;
  const downloads = h("div", { class: "row downloads" }, h("span", { text: "Download: " }),
    h("a", { class: "button secondary", id: "dl-extxyz", href: base + "extxyz", download: "", text: "extxyz" }),
    cell && (c.pbc || []).every(Boolean) ? h("a", { class: "button secondary", id: "dl-cif", href: base + "cif", download: "", text: "CIF" }) : null,
    h("a", { class: "button secondary", id: "dl-poscar", href: base + "poscar", download: "", text: "POSCAR" }),
    h("a", { class: "button secondary", href: base + "json", download: `${id}.json`, text: "JSON" }));

  const viewerBox = h("div", { class: "viewer", id: "viewer" }, h("p", { class: "loading", text: "Drawing the structure…" }));
  const forces = Array.isArray(c.forces) && c.forces.length === symbols.length ? c.forces : null;
  const left = h("div", {}, viewerBox,
    h("p", { class: "muted" }, `${symbols.length} atoms`, forces ? "; red arrows are the forces, the largest drawn 1.6 Å long" : "",
      cell ? "; grey lines are the unit cell" : ""), downloads);

  const stress = Array.isArray(c.stress) && c.stress.length === 9 ? c.stress : null;
  const labels = section("Labels", dl([
    ["Energy", c.energy !== null && c.energy !== undefined ? `${fmt(c.energy, 8)} eV` : null],
    ["Energy per atom", c.energy_per_atom !== null && c.energy_per_atom !== undefined ? `${fmt(c.energy_per_atom, 6)} eV` : null],
    ["Largest force", c.max_force !== null && c.max_force !== undefined ? `${fmt(c.max_force)} eV/Å` : null],
    ["Stress (eV/Å³)", stress ? h("table", { class: "matrix", "aria-label": "stress tensor" }, h("tbody", {},
      [0, 1, 2].map((i) => h("tr", {}, [0, 1, 2].map((j) => h("td", { class: "num", text: fmt(stress[3 * i + j], 4) })))))) : null],
    ["Virial", c.virial ? fmt(c.virial) : null], ["Charges", c.charges ? "per atom (below)" : null],
    ["Magnetic moments", c.magmoms ? "per atom (below)" : null], ["Dipole", c.dipole ? fmt(c.dipole) : null],
    ["Volume", c.volume ? `${fmt(c.volume)} Å³` : null], ["Periodic", (c.pbc || []).map((p) => (p ? "T" : "F")).join(" ")],
    ["Cell (Å)", cell ? h("table", { class: "matrix", "aria-label": "cell vectors" }, h("tbody", {},
      [0, 1, 2].map((i) => h("tr", {}, [0, 1, 2].map((j) => h("td", { class: "num", text: fmt(cell[3 * i + j], 5) })))))) : null],
  ]));

  const info = parseJSON(c.info) || {};
  const infoBox = section("Info", Object.keys(info).length ? dl(Object.entries(info).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v]))
    : h("p", { class: "muted", text: "No info keys." }));
  const prov = parseJSON(c.provenance) || {};
  const rawHref = c.source_file ? `${API}/deposits/${encodeURIComponent(c.deposit_id)}/files/${c.source_file.split("/").map(encodeURIComponent).join("/")}` : null;
  const provBox = section("Provenance", dl([
    ["Dataset", h("a", { href: route("dataset", c.dataset), text: c.dataset })],
    ["Deposit", h("code", { text: c.deposit_id })],
    ["Raw file", rawHref ? h("a", { href: rawHref, download: "", id: "raw-file", text: c.source_file }) : null],
    ["Frame in the file", c.frame_index],
    ["Method", methodText(c.method)],
    ["Deposited", prov.deposited_at], ["Units as deposited", prov.units ? Object.entries(prov.units).map(([k, v]) => `${k}: ${v}`).join(", ") : null],
    ["Structure hash", h("code", { text: c.structure_hash })],
  ]));
  view.append(h("div", { class: "config-grid" }, left, h("div", {}, labels, provBox, infoBox)));

  // per-atom keys
  const arrays = parseJSON(c.arrays) || {};
  const extraCols = Object.keys(arrays).filter((k) => Array.isArray(arrays[k]) && arrays[k].length === symbols.length);
  const perAtom = [["charges", c.charges], ["magmoms", c.magmoms]].filter(([, v]) => Array.isArray(v) && v.length === symbols.length);
  const rows = symbols.slice(0, MAX_ATOM_ROWS).map((el, i) => {
    const r = { i, el, pos: c.positions[i], f: forces ? forces[i] : null };
    for (const k of extraCols) r[k] = arrays[k][i];
    for (const [k, v] of perAtom) r[k] = v[i];
    return r;
  });
  const vec = (v) => (v ? v.map((x) => fmt(x, 5)).join("  ") : "–");
  const atomsTable = table([
    { key: "i", label: "#", num: true, header: true }, { key: "el", label: "Element" },
    { key: "pos", label: "Position (Å)", render: (r) => h("span", { class: "mono", text: vec(r.pos) }) },
    forces ? { key: "f", label: "Force (eV/Å)", render: (r) => h("span", { class: "mono", text: vec(r.f) }) } : null,
    ...perAtom.map(([k]) => ({ key: k, label: k, num: true })),
    ...extraCols.map((k) => ({ key: k, label: k, render: (r) => fmt(r[k]) })),
  ].filter(Boolean), rows, { caption: symbols.length > MAX_ATOM_ROWS ? `Per-atom keys (first ${MAX_ATOM_ROWS} of ${symbols.length} atoms)` : "Per-atom keys" });
  view.append(section("Atoms", h("details", { open: symbols.length <= 24 },
    h("summary", { text: `Positions, forces and per-atom keys of ${symbols.length} atoms` }), atomsTable)));

  await structureViewer(viewerBox, { symbols, positions: c.positions, cell, pbc: c.pbc, forces },
    { label: `3D view of ${c.chemical_formula_hill || id}: ${symbols.length} atoms${forces ? " with force arrows" : ""}` });
}
