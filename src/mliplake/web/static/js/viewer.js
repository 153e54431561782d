// 3D structures with 3Dmol.js (vendored; loaded only on pages that show a structure): atoms and
// bonds, the unit cell, force arrows; rotate/zoom with the mouse, touch or the buttons/keys.
import { h } from "./ui.js";

let loading = null;
export function load3Dmol() {
  if (window.$3Dmol) return Promise.resolve(window.$3Dmol);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = "/static/vendor/3dmol/3Dmol-min.js";
      el.onload = () => resolve(window.$3Dmol);
      el.onerror = () => reject(new Error("3Dmol.js did not load"));
      document.head.append(el);
    });
  }
  return loading;
}

export function webglAvailable() {
  try {
    const c = document.createElement("canvas");
    return Boolean(c.getContext("webgl2") || c.getContext("webgl"));
  } catch { return false; }
}

function cellVectors(cell) {
  if (!cell) return null;
  const flat = cell.flat ? cell.flat() : cell;
  if (flat.length !== 9 || flat.every((v) => !v)) return null;
  return [flat.slice(0, 3), flat.slice(3, 6), flat.slice(6, 9)];
}

export function xyzText(symbols, positions) {
  const lines = [String(symbols.length), "mliplake"];
  symbols.forEach((el, i) => lines.push(`${el} ${positions[i].map((v) => v.toFixed(6)).join(" ")}`));
  return lines.join("\n") + "\n";
}

/**
 * A viewer in `container` for {symbols, positions, cell, pbc, forces}; or {text, format} (POSCAR,
 * CIF, xyz: read by 3Dmol).  Returns {viewer, setForces(bool), setCell(bool), redraw()}.
 */
export async function structureViewer(container, structure, { label = "3D structure", forces = true } = {}) {
  container.replaceChildren();
  if (!webglAvailable()) {
    container.append(h("p", { class: "error", role: "alert", text: "This browser has no WebGL: the 3D view is unavailable." }));
    return null;
  }
  const $3Dmol = await load3Dmol();
  const stage = h("div", { class: "viewer-stage", role: "img", "aria-label": label, tabindex: "0",
    title: "Drag to rotate, scroll or pinch to zoom; arrow keys rotate, + and − zoom" });
  const state = { forces: forces && Boolean(structure.forces), cell: true };
  const controls = h("div", { class: "viewer-controls", role: "toolbar", "aria-label": "3D view controls" });
  container.append(stage, controls);
  const viewer = $3Dmol.createViewer(stage, { backgroundColor: "white", antialias: true });
  let model;
  if (structure.text) {
    model = viewer.addModel(structure.text, structure.format);
  } else {
    model = viewer.addModel(xyzText(structure.symbols, structure.positions), "xyz");
  }
  viewer.setStyle({}, { stick: { radius: 0.12 }, sphere: { scale: 0.22 } });
  const shapes = { forces: [], cell: [] };

  function drawCell() {
    shapes.cell.forEach((sh) => viewer.removeShape(sh));
    shapes.cell = [];
    if (structure.text) { // a file read by 3Dmol: its own unit cell (without the axis arrows, which look like forces)
      try {
        viewer.removeUnitCell(model);
        if (state.cell) viewer.addUnitCell(model, { box: { color: "#555" }, astyle: { hidden: true }, bstyle: { hidden: true }, cstyle: { hidden: true } });
      } catch { /* no cell in the file */ }
      return;
    }
    if (!state.cell) return;
    const v = cellVectors(structure.cell);
    if (!v) return;
    const add = (p, q) => [p[0] + q[0], p[1] + q[1], p[2] + q[2]];
    const O = [0, 0, 0], corners = {};
    for (const i of [0, 1]) for (const j of [0, 1]) for (const k of [0, 1]) {
      let p = O;
      if (i) p = add(p, v[0]);
      if (j) p = add(p, v[1]);
      if (k) p = add(p, v[2]);
      corners[`${i}${j}${k}`] = p;
    }
    for (const [a, p] of Object.entries(corners)) for (const [b, q] of Object.entries(corners)) {
      const diff = [...a].filter((c, n) => c !== b[n]).length;
      if (diff === 1 && a < b) {
        shapes.cell.push(viewer.addCylinder({ start: { x: p[0], y: p[1], z: p[2] }, end: { x: q[0], y: q[1], z: q[2] },
          radius: 0.04, color: "#555", fromCap: 1, toCap: 1 }));
      }
    }
  }

  function drawForces() {
    shapes.forces.forEach((sh) => viewer.removeShape(sh));
    shapes.forces = [];
    if (!state.forces || !structure.forces) return;
    const F = structure.forces, P = structure.positions;
    const top = Math.max(1e-9, ...F.map((f) => Math.hypot(f[0], f[1], f[2])));
    const scale = 1.6 / top; // the largest force is drawn 1.6 Å long
    F.forEach((f, i) => {
      const n = Math.hypot(f[0], f[1], f[2]);
      if (n * scale < 0.05) return;
      const p = P[i];
      shapes.forces.push(viewer.addArrow({ start: { x: p[0], y: p[1], z: p[2] },
        end: { x: p[0] + f[0] * scale, y: p[1] + f[1] * scale, z: p[2] + f[2] * scale },
        radius: 0.09, radiusRatio: 1.9, mid: 0.72, color: "#d62728" }));
    });
  }

  const redraw = () => { drawCell(); drawForces(); viewer.render(); };
  const button = (text, title, fn) => h("button", { type: "button", class: "small", title, "aria-label": title, onclick: fn }, text);
  controls.append(
    button("⟲", "Rotate left", () => { viewer.rotate(-15, "y"); viewer.render(); }),
    button("⟳", "Rotate right", () => { viewer.rotate(15, "y"); viewer.render(); }),
    button("⤒", "Rotate up", () => { viewer.rotate(-15, "x"); viewer.render(); }),
    button("⤓", "Rotate down", () => { viewer.rotate(15, "x"); viewer.render(); }),
    button("+", "Zoom in", () => { viewer.zoom(1.25); viewer.render(); }),
    button("−", "Zoom out", () => { viewer.zoom(0.8); viewer.render(); }),
    button("Reset", "Reset the view", () => { viewer.zoomTo(); viewer.render(); }));
  const toggle = (text, key, enabled) => {
    const box = h("input", { type: "checkbox", checked: state[key], disabled: !enabled,
      onchange: () => { state[key] = box.checked; redraw(); } });
    return h("label", { class: "check" }, box, " ", text);
  };
  controls.append(toggle("Unit cell", "cell", true), toggle("Force arrows", "forces", Boolean(structure.forces)));
  stage.addEventListener("keydown", (e) => {
    const act = { ArrowLeft: () => viewer.rotate(-10, "y"), ArrowRight: () => viewer.rotate(10, "y"),
      ArrowUp: () => viewer.rotate(-10, "x"), ArrowDown: () => viewer.rotate(10, "x"),
      "+": () => viewer.zoom(1.2), "=": () => viewer.zoom(1.2), "-": () => viewer.zoom(0.83) }[e.key];
    if (act) { e.preventDefault(); act(); viewer.render(); }
  });
  drawCell();
  drawForces();
  viewer.zoomTo();
  viewer.render();
  stage.dataset.drawn = "1";
  return { viewer, redraw, state };
}
