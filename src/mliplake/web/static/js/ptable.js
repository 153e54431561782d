// A periodic table as a CSS grid: a selector (toggle buttons with counts) or a heatmap (values
// coloured on a scale, with a legend).  No library.
import { h, fmt } from "./ui.js";

export const SYMBOLS = ("H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge " +
  "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm " +
  "Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg " +
  "Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og").split(" ");

const NAMES = ("Hydrogen Helium Lithium Beryllium Boron Carbon Nitrogen Oxygen Fluorine Neon Sodium Magnesium " +
  "Aluminium Silicon Phosphorus Sulfur Chlorine Argon Potassium Calcium Scandium Titanium Vanadium Chromium " +
  "Manganese Iron Cobalt Nickel Copper Zinc Gallium Germanium Arsenic Selenium Bromine Krypton Rubidium " +
  "Strontium Yttrium Zirconium Niobium Molybdenum Technetium Ruthenium Rhodium Palladium Silver Cadmium Indium " +
  "Tin Antimony Tellurium Iodine Xenon Caesium Barium Lanthanum Cerium Praseodymium Neodymium Promethium " +
  "Samarium Europium Gadolinium Terbium Dysprosium Holmium Erbium Thulium Ytterbium Lutetium Hafnium Tantalum " +
  "Tungsten Rhenium Osmium Iridium Platinum Gold Mercury Thallium Lead Bismuth Polonium Astatine Radon " +
  "Francium Radium Actinium Thorium Protactinium Uranium Neptunium Plutonium Americium Curium Berkelium " +
  "Californium Einsteinium Fermium Mendelevium Nobelium Lawrencium Rutherfordium Dubnium Seaborgium Bohrium " +
  "Hassium Meitnerium Darmstadtium Roentgenium Copernicium Nihonium Flerovium Moscovium Livermorium " +
  "Tennessine Oganesson").split(" ");

export const NAME_OF = Object.fromEntries(SYMBOLS.map((s, i) => [s, NAMES[i]]));

// [row, column] in an 18-column grid; lanthanides and actinides in rows 9 and 10
export function position(z) {
  if (z === 1) return [1, 1];
  if (z === 2) return [1, 18];
  const starts = [[3, 2], [11, 3], [19, 4], [37, 5], [55, 6], [87, 7]];
  let period = 2, start = 3;
  for (const [s, p] of starts) if (z >= s) { start = s; period = p; }
  const i = z - start;
  if (period <= 3) return [period, i < 2 ? i + 1 : i + 11];
  if (period <= 5) return [period, i + 1];
  if (i < 2) return [period, i + 1];
  if (i <= 16) return [period + 3, i + 1]; // La..Lu, Ac..Lr: cols 3..17 of the f rows
  return [period, i - 14 + 1];
}

// a sequential colour scale (viridis, reversed for "more is darker")
const VIRIDIS = [[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]];
export function colour(t) {
  t = Math.max(0, Math.min(1, t));
  const x = t * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + (VIRIDIS[i + 1][k] - v) * f));
  return { bg: `rgb(${c.join(",")})`, fg: t > 0.45 ? "#fff" : "#111" };
}

/**
 * options: {label, counts: {El: n}, selected: Set, onToggle(sym), heat: {El: value}, unit, log}
 * Without onToggle the table is a heatmap (or a plain display of counts).
 */
export function periodicTable(opts) {
  const { label, counts = {}, selected = new Set(), onToggle, heat, unit = "", compact } = opts;
  const grid = h("div", { class: "ptable" + (compact ? " compact" : ""), role: "group", "aria-label": label });
  let lo = Infinity, hi = -Infinity;
  if (heat) for (const v of Object.values(heat)) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  SYMBOLS.forEach((sym, i) => {
    const z = i + 1, [row, col] = position(z);
    const n = counts[sym], v = heat ? heat[sym] : undefined;
    const present = heat ? Number.isFinite(v) : n > 0;
    const text = [h("span", { class: "z", "aria-hidden": "true", text: String(z) }), h("span", { class: "sym", text: sym })];
    if (heat && present) text.push(h("span", { class: "val", text: fmt(v, 2) }));
    else if (!heat && n) text.push(h("span", { class: "val", text: fmt(n) }));
    let cell;
    const desc = `${NAME_OF[sym]} (${sym})` + (heat ? (present ? `: ${fmt(v)} ${unit}` : ": no data")
      : (n ? `: ${fmt(n)}` : ""));
    if (onToggle) {
      const on = selected.has(sym);
      cell = h("button", { type: "button", class: "el" + (present ? " has" : " none") + (on ? " on" : ""),
        "aria-pressed": on ? "true" : "false", "aria-label": desc, title: desc, "data-el": sym,
        onclick: () => onToggle(sym) }, text);
    } else {
      cell = h("div", { class: "el" + (present ? " has" : " none"), title: desc, "data-el": sym,
        role: present ? "img" : null, "aria-label": present ? desc : null, "aria-hidden": present ? null : "true" }, text);
      if (heat && present) {
        const c = colour(hi > lo ? (v - lo) / (hi - lo) : 0.5);
        cell.style.background = c.bg;
        cell.style.color = c.fg;
      }
    }
    cell.style.gridRow = String(row);
    cell.style.gridColumn = String(col);
    grid.append(cell);
  });
  if (!heat) return grid;
  const legend = h("div", { class: "legend", "aria-hidden": "true" },
    h("span", { text: Number.isFinite(lo) ? `${fmt(lo)} ${unit}` : "" }),
    h("span", { class: "ramp" }), h("span", { text: Number.isFinite(hi) ? `${fmt(hi)} ${unit}` : "" }));
  return h("figure", { class: "heat" }, grid, legend);
}
