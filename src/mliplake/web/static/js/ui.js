// Small DOM helpers: elements built with textContent only (no HTML from data), tables, numbers.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const svgNS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) if (c) el.append(c);
  return el;
}

export function fmt(v, digits = 4) {
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return "–";
    if (Number.isInteger(v)) return v.toLocaleString("en");
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return Number(v.toPrecision(digits)).toString();
  }
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

export function announce(text) {
  const el = document.getElementById("status");
  if (el) { el.textContent = ""; setTimeout(() => { el.textContent = text; }, 30); }
}

export function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

export function errorBox(err, what) {
  const p = err && err.problem ? err.problem : {};
  return h("div", { class: "error", role: "alert" },
    h("strong", { text: what ? `${what}: ` : "" }), p.title || (err && err.message) || String(err),
    p.detail ? h("pre", { text: p.detail }) : null);
}

export function badge(visibility, until) {
  if (!visibility || visibility === "public") return null;
  const label = visibility === "embargoed" ? `embargoed${until ? " until " + String(until).slice(0, 10) : ""}` : visibility;
  return h("span", { class: `badge badge-${visibility}`, title: `This dataset is ${label}: only people it is shared with see it` }, label);
}

export function link(href, text, attrs) { return h("a", { href, ...(attrs || {}) }, text); }

export function route(...parts) { return "#/" + parts.map((p) => encodeURIComponent(p)).join("/"); }

export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const t = q.toString();
  return t ? `${path}?${t}` : path;
}

// A table: columns [{key, label, render?(row), num?, sort?}]; sortable headers call onSort(key).
export function table(columns, rows, { caption, sortKey, descending, onSort, rowKey, empty, className } = {}) {
  const head = h("tr", {}, columns.map((c) => {
    const th = h("th", { scope: "col", class: c.num ? "num" : null });
    if (onSort && c.sort !== false) {
      const active = sortKey === c.key;
      th.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
      th.append(h("button", { type: "button", class: "sort", "data-sort": c.key, onclick: () => onSort(c.key) },
        c.label, h("span", { "aria-hidden": "true", class: "arrow", text: active ? (descending ? " ▼" : " ▲") : "" })));
    } else th.textContent = c.label;
    return th;
  }));
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption || "table" },
    h("table", { class: className || null }, caption ? h("caption", { text: caption }) : null,
      h("thead", {}, head), h("tbody", {}, bodyRows(columns, rows, rowKey, empty))));
}

function bodyRows(columns, rows, rowKey, empty) {
  return rows.length
    ? rows.map((r) => h("tr", { "data-key": rowKey ? rowKey(r) : null }, columns.map((c) => {
        const v = c.render ? c.render(r) : fmt(r[c.key]);
        return h(c.header ? "th" : "td", { class: c.num ? "num" : null, scope: c.header ? "row" : null }, v);
      })))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "empty", text: empty || "Nothing to show." }))];
}

// Redraw a sortable table made by table() in a new order: what table() would draw, but its header
// stays (only the sort marks change), so the heading just pressed keeps the focus, and only the rows
// are new.
export function resort(wrap, columns, rows, { caption, sortKey, descending, rowKey, empty } = {}) {
  const t = wrap.querySelector("table");
  if (caption) { t.caption.textContent = caption; wrap.setAttribute("aria-label", caption); }
  for (const th of t.tHead.rows[0].cells) {
    const b = th.querySelector("button.sort");
    if (!b) continue;
    const active = b.dataset.sort === sortKey;
    th.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
    b.querySelector(".arrow").textContent = active ? (descending ? " ▼" : " ▲") : "";
  }
  t.tBodies[0].replaceChildren(...bodyRows(columns, rows, rowKey, empty));
}

export function section(title, ...children) {
  const id = "s-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id, text: title }), children);
}

export function dl(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "" &&
    !(Array.isArray(v) && !v.length)).map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v instanceof Node ? v : fmt(v))]));
}

export function parseJSON(v) {
  if (typeof v !== "string") return v;
  try { return JSON.parse(v); } catch { return v; }
}

export function methodText(m) {
  m = parseJSON(m);
  if (!m) return "";
  if (typeof m === "string") return m;
  return ["code", "functional", "basis"].map((k) => m[k]).filter(Boolean).join(" · ") ||
    Object.entries(m).map(([k, v]) => `${k}: ${v}`).join(", ");
}

export function download(href, text, attrs) {
  return h("a", { class: "button", href, download: "", ...(attrs || {}) }, text);
}
