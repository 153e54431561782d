// Deposit: files and manifest fields -> resumable tus uploads (progress, resume after a break)
// -> POST /deposits -> the deposit's status, live, and its quarantine report.
import { get, post, me, request, API, ApiError } from "../api.js";
import { h, fmt, bytes, table, errorBox, section, route, announce } from "../ui.js";

const CHUNK = 4 << 20;
const LICENCES = ["CC-BY-4.0", "CC0-1.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "MIT", "BSD-3-Clause", "Apache-2.0", "ODbL-1.0"];
const BUSY = new Set(["received", "staging", "staged", "ingesting", "done"]);
const STEPS = ["uploading", "received", "staging", "ingesting", "stored"];

function b64(s) { return btoa(String.fromCharCode(...new TextEncoder().encode(s))); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function rememberDeposit(id, dataset) {
  const list = JSON.parse(localStorage.getItem("mliplake-deposits") || "[]").filter((d) => d.id !== id);
  list.unshift({ id, dataset, at: new Date().toISOString() });
  localStorage.setItem("mliplake-deposits", JSON.stringify(list.slice(0, 50)));
}

/** one file, resumably: an upload already begun for this file (same name, size, date) continues */
export async function tusUpload(file, onProgress) {
  const key = `mliplake-tus:${file.name}:${file.size}:${file.lastModified}`;
  let url = localStorage.getItem(key), offset = 0;
  if (url) {
    try {
      const r = await request("HEAD", url, { raw: true, headers: { "Tus-Resumable": "1.0.0" } });
      offset = Number(r.headers.get("Upload-Offset")) || 0;
    } catch { url = null; offset = 0; }
  }
  if (!url) {
    const r = await request("POST", `${API}/uploads`, { raw: true, headers: { "Tus-Resumable": "1.0.0",
      "Upload-Length": String(file.size), "Upload-Metadata": `filename ${b64(file.name)}` } });
    url = new URL(r.headers.get("Location"), location.href).pathname;
    localStorage.setItem(key, url);
  }
  onProgress(offset);
  let failures = 0;
  while (offset < file.size) {
    try {
      const r = await request("PATCH", url, { raw: true, body: file.slice(offset, offset + CHUNK),
        headers: { "Tus-Resumable": "1.0.0", "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" } });
      offset = Number(r.headers.get("Upload-Offset"));
      failures = 0;
      onProgress(offset);
    } catch (err) {
      if (err instanceof ApiError && err.status < 500 && err.status !== 409) throw err;
      if (++failures > 5) throw err;
      await sleep(1000 * failures); // a dropped connection: ask where it stopped, go on from there
      const r = await request("HEAD", url, { raw: true, headers: { "Tus-Resumable": "1.0.0" } });
      offset = Number(r.headers.get("Upload-Offset")) || 0;
    }
  }
  localStorage.removeItem(key);
  return url.split("/").pop();
}

function field(id, label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input, hint ? h("span", { class: "hint", id: `${id}-hint`, text: hint }) : null);
}

export async function render(view) {
  view.append(h("h1", { text: "Deposit data" }),
    h("p", { class: "lede", text: "Upload extxyz, VASP, JSON or archive files with a manifest. Uploads resume after a broken connection; the deposit is checked, stored and reported below." }));
  const user = await me();
  if (user.kind === "anonymous") {
    view.append(h("p", { class: "note" }, "Depositing needs an account with the depositor role and a write token: ",
      h("a", { href: "#/signin", text: "sign in" }), "."));
  }
  const i = (id, attrs) => h("input", { id, type: "text", ...(attrs || {}) });
  const files = h("input", { type: "file", id: "dep-files", multiple: true, required: true, "aria-describedby": "dep-files-hint" });
  const dataset = i("dep-dataset", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*", "aria-describedby": "dep-dataset-hint" });
  const title = i("dep-title"), authors = i("dep-authors"), doi = i("dep-doi"), links = i("dep-links");
  const description = h("textarea", { id: "dep-description", rows: 3 });
  const license = i("dep-license", { list: "licences", "aria-describedby": "dep-license-hint" });
  const code = i("dep-code", { placeholder: "VASP" }), functional = i("dep-functional", { placeholder: "PBE" }), basis = i("dep-basis", { placeholder: "plane waves, 520 eV" });
  const sel = (id, opts) => h("select", { id }, opts.map((o) => h("option", { value: o, text: o || "not declared" })));
  const uEnergy = sel("dep-u-energy", ["eV", "meV", "Hartree", "kcal/mol", "kJ/mol", "Ry", ""]);
  const uLength = sel("dep-u-length", ["Angstrom", "Bohr", "nm", ""]);
  const uForces = sel("dep-u-forces", ["eV/Angstrom", "Hartree/Bohr", "kcal/mol/Angstrom", "meV/Angstrom", ""]);
  const uStress = sel("dep-u-stress", ["eV/Angstrom^3", "GPa", "kbar", "bar", ""]);
  const labelBoxes = ["energy", "forces", "stress", "virial"].map((l) => h("input", { type: "checkbox", value: l, id: `dep-label-${l}`, checked: l === "energy" }));
  const visibility = h("select", { id: "dep-visibility" }, ["public", "private", "embargoed"].map((v) => h("option", { value: v, text: v })));
  const groups = i("dep-groups", { placeholder: "g1, g2" });
  const until = h("input", { type: "date", id: "dep-until" });
  const keyMap = h("textarea", { id: "dep-keymap", rows: 2, class: "mono", placeholder: "DFT_energy: energy" });
  const submit = h("button", { type: "submit", id: "dep-submit", text: "Upload and deposit" });
  const progress = h("div", { id: "dep-progress", "aria-live": "polite" });

  const form = h("form", { class: "card", id: "deposit-form", onsubmit: (e) => { e.preventDefault(); start(); } },
    h("fieldset", {}, h("legend", { text: "Files" }), field("dep-files", "Files", files, "extxyz, VASP OUTCAR/vasprun.xml, JSON, or a .zip/.tar.gz of them")),
    h("fieldset", {}, h("legend", { text: "About the data" }),
      h("div", { class: "grid2" },
        field("dep-dataset", "Dataset name (required)", dataset, "letters, digits, . _ -; an existing dataset of yours gets a new version"),
        field("dep-title", "Title", title),
        field("dep-authors", "Authors", authors, "comma-separated"),
        field("dep-license", "Licence", license, "an SPDX identifier, e.g. CC-BY-4.0"),
        field("dep-doi", "DOI", doi), field("dep-links", "Links", links, "comma-separated URLs")),
      field("dep-description", "Description", description),
      h("datalist", { id: "licences" }, LICENCES.map((l) => h("option", { value: l })))),
    h("fieldset", {}, h("legend", { text: "Method" }), h("div", { class: "grid2" },
      field("dep-code", "Code", code), field("dep-functional", "Functional", functional), field("dep-basis", "Basis", basis))),
    h("fieldset", {}, h("legend", { text: "Units and labels" }), h("div", { class: "grid2" },
      field("dep-u-energy", "Energy", uEnergy), field("dep-u-length", "Length", uLength),
      field("dep-u-forces", "Forces", uForces), field("dep-u-stress", "Stress", uStress)),
    h("div", { class: "row", role: "group", "aria-label": "Labels every frame must have" }, h("span", { text: "Required in every frame: " }),
      labelBoxes.map((b) => h("label", { class: "check", for: b.id }, b, " ", b.value))),
      field("dep-keymap", "Key map (one 'file key: lake key' a line)", keyMap)),
    h("fieldset", {}, h("legend", { text: "Who may see it" }), h("div", { class: "grid2" },
      field("dep-visibility", "Visibility", visibility), field("dep-groups", "Groups (private)", groups),
      field("dep-until", "Embargo until (embargoed)", until))),
    h("div", { class: "row" }, submit));
  view.append(form, progress);

  function manifest() {
    const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
    const m = { dataset: dataset.value.trim(), visibility: visibility.value };
    if (title.value.trim()) m.title = title.value.trim();
    if (description.value.trim()) m.description = description.value.trim();
    if (authors.value.trim()) m.authors = list(authors.value);
    if (license.value.trim()) m.license = license.value.trim();
    if (doi.value.trim()) m.doi = doi.value.trim();
    if (links.value.trim()) m.links = list(links.value);
    const method = Object.fromEntries([["code", code.value], ["functional", functional.value], ["basis", basis.value]].filter(([, v]) => v.trim()).map(([k, v]) => [k, v.trim()]));
    if (Object.keys(method).length) m.method = method;
    const units = Object.fromEntries([["energy", uEnergy.value], ["length", uLength.value], ["forces", uForces.value], ["stress", uStress.value]].filter(([, v]) => v));
    if (Object.keys(units).length) m.units = units;
    m.labels = labelBoxes.filter((b) => b.checked).map((b) => b.value);
    const km = Object.fromEntries(keyMap.value.split("\n").map((l) => l.split(":").map((x) => x.trim())).filter((p) => p.length === 2 && p[0] && p[1]));
    if (Object.keys(km).length) m.key_map = km;
    if (visibility.value === "private" && groups.value.trim()) m.groups = list(groups.value);
    if (visibility.value === "embargoed") m.embargo_until = until.value;
    return m;
  }

  async function start() {
    const chosen = [...files.files];
    if (!chosen.length) { files.focus(); return; }
    submit.disabled = true;
    const total = chosen.reduce((a, f) => a + f.size, 0);
    const bar = h("progress", { id: "dep-bar", max: String(Math.max(total, 1)), value: "0", "aria-label": "Upload progress" });
    const barText = h("span", { id: "dep-bar-text" });
    const steps = h("ol", { class: "steps", "aria-label": "Deposit steps" }, STEPS.map((s) => h("li", { "data-step": s, text: s })));
    const statusLine = h("p", { id: "dep-status", role: "status" });
    const report = h("div", { id: "dep-report" });
    progress.replaceChildren(section("Progress", steps, bar, barText, statusLine, report));
    const mark = (now, bad) => {
      const n = STEPS.indexOf(now);
      steps.querySelectorAll("li").forEach((li, k) => { li.className = bad && li.dataset.step === now ? "bad" : k < n || (now === "stored" && k === n) ? "done" : k === n ? "now" : ""; });
    };
    mark("uploading");
    let done = 0;
    const ids = [];
    try {
      for (const f of chosen) {
        ids.push(await tusUpload(f, (off) => {
          bar.value = done + off;
          barText.textContent = `${bytes(done + off)} of ${bytes(total)} (${Math.round((100 * (done + off)) / Math.max(total, 1))}%)`;
        }));
        done += f.size;
      }
      bar.value = total;
      barText.textContent = `${bytes(total)} uploaded`;
      const dep = (await post("deposits", { uploads: ids, manifest: manifest() })).data;
      rememberDeposit(dep.id, dataset.value.trim());
      statusLine.textContent = `Deposit ${dep.id}: ${dep.status}`;
      await follow(dep.id, statusLine, report, mark);
    } catch (err) {
      statusLine.replaceChildren(errorBox(err, "The deposit stopped"), err instanceof ApiError ? "" :
        h("p", {}, "The files uploaded so far are kept: press the button again to resume."));
    } finally { submit.disabled = false; }
  }
}

/** poll the deposit until it is done; show its report (and quarantine) */
export async function follow(id, statusLine, report, mark = () => {}) {
  let st;
  for (let k = 0; ; k++) {
    st = (await get(`intake/${encodeURIComponent(id)}`)).data;
    const s = st.status;
    mark(s === "staged" ? "staging" : s === "done" ? "ingesting" : BUSY.has(s) ? s : s === "failed" ? "ingesting" : "stored", s === "failed");
    statusLine.textContent = `Deposit ${id}: ${s}`;
    if (!BUSY.has(s)) break;
    await sleep(Math.min(500 + 250 * k, 3000));
  }
  announce(`Deposit ${st.status}`);
  statusLine.replaceChildren(`Deposit ${id}: `, h("strong", { id: "dep-final", class: st.status === "stored" ? "ok" : "", text: st.status }));
  if (st.error) report.append(h("div", { class: "error", role: "alert" }, h("pre", { text: st.error })));
  const r = st.report;
  if (r) {
    report.append(table([{ key: "k", label: "", header: true }, { key: "v", label: "", num: true }], [
      { k: "Frames read", v: r.frames_read }, { k: "Stored", v: r.stored }, { k: "Duplicates", v: r.duplicates }, { k: "Quarantined", v: r.quarantined }],
    { caption: "Report" }));
    if (r.dataset) report.append(h("p", {}, h("a", { href: route("dataset", r.dataset), text: `Open ${r.dataset}` })));
    const reasons = Object.entries(r.reasons || {});
    if (reasons.length) report.append(table([{ key: "reason", label: "Reason", header: true }, { key: "n", label: "Frames", num: true }],
      reasons.map(([reason, n]) => ({ reason, n })), { caption: "Why frames were quarantined" }));
    for (const w of r.warnings || []) report.append(h("p", { class: "note", text: w }));
    if (r.quarantined && st.deposit_id) {
      try {
        const rows = (await get(`deposits/${encodeURIComponent(st.deposit_id)}/quarantine`)).data;
        report.append(table([{ key: "source_file", label: "File", header: true }, { key: "frame_index", label: "Frame", num: true },
          { key: "reason", label: "Reason" }, { key: "detail", label: "Detail" }], rows, { caption: "Quarantined frames" }));
      } catch { /* the report above says how many */ }
    }
  }
  return st;
}
