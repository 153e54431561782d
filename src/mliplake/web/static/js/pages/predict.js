// Predict: a structure (pasted or a file: POSCAR, extxyz, CIF) and a model -> energy, forces and
// stress, optionally after a relaxation; drawn with the force arrows.
import { get, post } from "../api.js";
import { h, fmt, table, errorBox, section, dl, route, announce } from "../ui.js";
import { structureViewer } from "../viewer.js";
import { lines } from "../plots.js";

const EXAMPLE = `Si8 diamond
1.0
5.43 0.0 0.0
0.0 5.43 0.0
0.0 0.0 5.43
Si
8
Direct
0.00 0.00 0.00
0.00 0.50 0.50
0.50 0.00 0.50
0.50 0.50 0.00
0.25 0.25 0.25
0.25 0.75 0.75
0.75 0.25 0.75
0.77 0.76 0.24
`;

export function guessFormat(text) {
  const t = text.trimStart();
  if (/^data_|_cell_length_a/m.test(t)) return "cif";
  if (/^\d+\s*\n/.test(t)) return "extxyz";
  return "poscar";
}
const VIEWER_FORMAT = { cif: "cif", extxyz: "xyz", poscar: "vasp" };

export async function render(view, args, query) {
  const modelSel = h("select", { id: "pred-model", required: true });
  const text = h("textarea", { id: "pred-structure", rows: 12, class: "mono", spellcheck: "false", "aria-describedby": "pred-help" });
  text.value = EXAMPLE;
  const file = h("input", { type: "file", id: "pred-file", accept: ".vasp,.poscar,.xyz,.extxyz,.cif,POSCAR,CONTCAR,text/plain" });
  const fmtSel = h("select", { id: "pred-format" }, [["", "guess"], ["poscar", "POSCAR"], ["extxyz", "extxyz"], ["cif", "CIF"]]
    .map(([v, t]) => h("option", { value: v, text: t })));
  const relax = h("input", { type: "checkbox", id: "pred-relax" });
  const fmax = h("input", { type: "text", id: "pred-fmax", value: "0.05", inputmode: "decimal", size: 6 });
  const steps = h("input", { type: "text", id: "pred-steps", value: "50", inputmode: "numeric", size: 5 });
  const preview = h("div", { class: "viewer", id: "pred-preview" });
  const out = h("div", { id: "pred-result", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "pred-run", text: "Predict" });

  view.append(h("h1", { text: "Predict" }),
    h("p", { class: "lede", text: "Energy, forces and stress of a structure by a registered model, optionally relaxed first." }));
  const form = h("form", { class: "card", onsubmit: (e) => { e.preventDefault(); run(); } },
    h("div", { class: "grid2" },
      h("div", { class: "field" }, h("label", { for: "pred-model", text: "Model" }), modelSel),
      h("div", { class: "field" }, h("label", { for: "pred-format", text: "Format" }), fmtSel)),
    h("div", { class: "field" }, h("label", { for: "pred-structure", text: "Structure" }), text,
      h("span", { id: "pred-help", class: "hint", text: "Paste POSCAR, extxyz or CIF text, or open a file." })),
    h("div", { class: "field" }, h("label", { for: "pred-file", text: "…or a file" }), file),
    h("fieldset", {}, h("legend", { text: "Relaxation" }),
      h("div", { class: "row" }, h("label", { class: "check" }, relax, " relax first (BFGS)"),
        h("label", { for: "pred-fmax", text: "until forces below (eV/Å)" }), fmax, h("label", { for: "pred-steps", text: "at most steps" }), steps)),
    h("div", { class: "row" }, submit, h("button", { type: "button", class: "secondary", onclick: () => drawPreview(), text: "Show the structure" })));
  view.append(h("div", { class: "config-grid" }, h("div", {}, form, out), section("Structure", preview)));

  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    text.value = await f.text();
    const name = f.name.toLowerCase();
    fmtSel.value = name.endsWith(".cif") ? "cif" : /\.(ext)?xyz$/.test(name) ? "extxyz" : /poscar|contcar|\.vasp$/.test(name) ? "poscar" : "";
    drawPreview();
  });

  async function drawPreview() {
    const format = fmtSel.value || guessFormat(text.value);
    try {
      await structureViewer(preview, { text: text.value, format: VIEWER_FORMAT[format] }, { label: "The structure to predict" });
    } catch (err) { preview.replaceChildren(errorBox(err, "The structure could not be drawn")); }
  }

  async function run() {
    out.replaceChildren(h("p", { class: "loading", text: "Predicting…" }));
    submit.disabled = true;
    try {
      const body = { model: modelSel.value, structure: text.value, relax: relax.checked };
      if (fmtSel.value) body.format = fmtSel.value;
      if (relax.checked) { body.fmax = Number(fmax.value) || 0.05; body.steps = Number(steps.value) || 50; }
      const r = (await post("predict", body)).data;
      showResult(r);
      announce(`Energy ${fmt(r.energy, 6)} eV`);
    } catch (err) {
      out.replaceChildren(errorBox(err, "No prediction"));
    } finally { submit.disabled = false; }
  }

  function showResult(r) {
    const F = r.forces || [];
    const norms = F.map((f) => Math.hypot(f[0], f[1], f[2]));
    const stress = r.stress;
    out.replaceChildren(section("Result", dl([
      ["Model", h("a", { href: route("model", r.model), text: r.model })], ["Energy", `${fmt(r.energy, 8)} eV`],
      ["Energy per atom", `${fmt(r.energy / r.natoms, 6)} eV`], ["Largest force", norms.length ? `${fmt(Math.max(...norms))} eV/Å` : null],
      ["Stress (eV/Å³)", stress ? h("table", { class: "matrix" }, h("tbody", {}, stress.map((row) => h("tr", {}, row.map((v) => h("td", { class: "num", text: fmt(v, 4) })))))) : null],
      ["Relaxation", r.trajectory ? `${r.trajectory.length} steps` : null],
    ]), r.trajectory && r.trajectory.length > 1 ? lines([{ label: "energy", points: r.trajectory.map((t, i) => [i, t.energy]) }],
      { title: "Energy during the relaxation", xLabel: "step", yLabel: "eV" }) : null,
    h("details", {}, h("summary", { text: "Forces per atom" }), table([
      { key: "i", label: "#", num: true, header: true }, { key: "el", label: "Element" },
      { key: "f", label: "Force (eV/Å)", render: (x) => h("span", { class: "mono", text: x.f.map((v) => fmt(v, 5)).join("  ") }) },
      { key: "n", label: "|F| (eV/Å)", num: true }],
    F.map((f, i) => ({ i, el: r.symbols[i], f, n: norms[i] })), { caption: "Forces" }))));
    structureViewer(preview, { symbols: r.symbols, positions: r.positions, cell: r.cell, pbc: r.pbc, forces: F },
      { label: `Predicted forces on ${r.natoms} atoms` });
  }

  try {
    const models = (await get("models")).data;
    modelSel.replaceChildren(...(models.length ? models.map((m) => h("option", { value: m.model_id, selected: m.model_id === query.get("model"),
      text: `${m.name || m.model_id} (${(m.elements || []).join(" ")})` })) : [h("option", { value: "", text: "no model registered" })]));
    if (!models.length) submit.disabled = true;
  } catch (err) { form.prepend(errorBox(err, "Models")); }
  await drawPreview();
}
