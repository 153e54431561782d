// Hand-drawn SVG plots: histograms of numeric keys, bar charts of categorical ones.
import { h, s, fmt } from "./ui.js";

function ticks(lo, hi, n = 4) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

/** histogram: [[lo, hi, n], ...] */
export function histogram(bins, { title, unit = "", width = 420, height = 220 } = {}) {
  const m = { l: 48, r: 12, t: 10, b: 38 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const lo = bins.length ? bins[0][0] : 0, hi = bins.length ? bins[bins.length - 1][1] : 1;
  const top = Math.max(1, ...bins.map((b) => b[2]));
  const x = (v) => m.l + (hi > lo ? ((v - lo) / (hi - lo)) * W : W / 2);
  const y = (n) => m.t + H - (n / top) * H;
  const total = bins.reduce((a, b) => a + b[2], 0);
  const peak = bins.reduce((a, b) => (b[2] > a[2] ? b : a), bins[0] || [0, 0, 0]);
  const label = `Histogram of ${title}${unit ? ` (${unit})` : ""}: ${fmt(total)} values from ${fmt(lo)} to ${fmt(hi)}; ` +
    `most between ${fmt(peak[0])} and ${fmt(peak[1])} (${fmt(peak[2])})`;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "plot" });
  svg.append(s("title", { text: label }));
  for (const t of ticks(0, top, 3)) {
    svg.append(s("line", { x1: m.l, x2: m.l + W, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", class: "tick", text: fmt(t) }));
  }
  bins.forEach(([a, b, n]) => {
    const r = s("rect", { x: x(a) + 0.5, y: y(n), width: Math.max(0.5, x(b) - x(a) - 1), height: m.t + H - y(n), class: "bar" });
    r.append(s("title", { text: `${fmt(a)} – ${fmt(b)}: ${fmt(n)}` }));
    svg.append(r);
  });
  for (const t of ticks(lo, hi, 4)) {
    svg.append(s("line", { x1: x(t), x2: x(t), y1: m.t + H, y2: m.t + H + 4, class: "axis" }));
    svg.append(s("text", { x: x(t), y: m.t + H + 16, "text-anchor": "middle", class: "tick", text: fmt(t, 3) }));
  }
  svg.append(s("line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: "axis" }));
  svg.append(s("text", { x: m.l + W / 2, y: height - 4, "text-anchor": "middle", class: "axis-label",
    text: `${title}${unit ? ` / ${unit}` : ""}` }));
  return h("figure", { class: "plot-fig", "data-key": title }, svg, h("figcaption", { text: `${title}${unit ? ` (${unit})` : ""}` }));
}

/** bars: [[value, n], ...] (a categorical key's most common values) */
export function bars(rows, { title, width = 420 } = {}) {
  const rowH = 22, m = { l: 150, r: 50 }, height = rows.length * rowH + 8;
  const top = Math.max(1, ...rows.map((r) => r[1]));
  const W = width - m.l - m.r;
  const label = `Most common values of ${title}: ` + rows.map(([v, n]) => `${v} ${n}`).join(", ");
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "plot" });
  svg.append(s("title", { text: label }));
  rows.forEach(([v, n], i) => {
    const yy = 4 + i * rowH, text = String(v ?? "–");
    svg.append(s("text", { x: m.l - 6, y: yy + 15, "text-anchor": "end", class: "tick",
      text: text.length > 22 ? text.slice(0, 21) + "…" : text }));
    svg.append(s("rect", { x: m.l, y: yy + 3, width: Math.max(1, (n / top) * W), height: rowH - 6, class: "bar" }));
    svg.append(s("text", { x: m.l + (n / top) * W + 4, y: yy + 15, class: "tick", text: fmt(n) }));
  });
  return h("figure", { class: "plot-fig", "data-key": title }, svg, h("figcaption", { text: title }));
}

/** lines: series [{label, points: [[x, y], ...]}] */
export function lines(series, { title, xLabel = "", yLabel = "", width = 420, height = 220 } = {}) {
  const m = { l: 52, r: 12, t: 10, b: 38 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const pts = series.flatMap((se) => se.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  const x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  const y0 = Math.min(0, ...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  const x = (v) => m.l + (x1 > x0 ? ((v - x0) / (x1 - x0)) * W : W / 2);
  const y = (v) => m.t + H - (y1 > y0 ? ((v - y0) / (y1 - y0)) * H : H / 2);
  const label = `${title}: ` + series.map((se) => `${se.label} from ${fmt(se.points[0] && se.points[0][1])} to ${fmt(se.points.at(-1) && se.points.at(-1)[1])}`).join("; ");
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "plot" });
  svg.append(s("title", { text: label }));
  for (const t of ticks(y0, y1, 3)) {
    svg.append(s("line", { x1: m.l, x2: m.l + W, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", class: "tick", text: fmt(t, 3) }));
  }
  for (const t of ticks(x0, x1, 4)) svg.append(s("text", { x: x(t), y: m.t + H + 16, "text-anchor": "middle", class: "tick", text: fmt(t, 3) }));
  const colours = ["#4472c4", "#d62728", "#2ca02c", "#9467bd"];
  series.forEach((se, i) => {
    svg.append(s("polyline", { points: se.points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), fill: "none",
      stroke: colours[i % colours.length], "stroke-width": 2 }));
    svg.append(s("text", { x: m.l + W - 4, y: m.t + 12 + i * 14, "text-anchor": "end", fill: colours[i % colours.length], text: se.label }));
  });
  svg.append(s("line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: "axis" }));
  svg.append(s("text", { x: m.l + W / 2, y: height - 4, "text-anchor": "middle", class: "axis-label", text: xLabel }));
  return h("figure", { class: "plot-fig" }, svg, h("figcaption", { text: yLabel ? `${title} (${yLabel})` : title }));
}
