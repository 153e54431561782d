// The portal's shell: hash routes -> page modules (loaded on first use), the signed-in user, the menu.
import { me, del, forgetMe } from "./api.js";
import { h, errorBox, announce } from "./ui.js";

const ROUTES = {
  "": ["catalogue", "Catalogue"],
  catalogue: ["catalogue", "Catalogue"],
  search: ["search", "Search"],
  dataset: ["dataset", "Dataset"],
  configuration: ["configuration", "Configuration"],
  leaderboard: ["models", "Leaderboard", "leaderboard"],
  model: ["models", "Model", "model"],
  predict: ["predict", "Predict"],
  deposit: ["deposit", "Deposit"],
  signin: ["account", "Sign in", "signin"],
  me: ["account", "My data", "mine"],
};

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
  return { name: parts[0] || "", args: parts.slice(1), query: new URLSearchParams(qs || "") };
}

let current = 0;
let who = Promise.resolve();
async function navigate() {
  const token = ++current;
  const { name, args, query } = parseHash();
  const main = document.getElementById("main");
  const route = ROUTES[name];
  const view = h("div", { class: "view" });
  main.replaceChildren(view);
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (a.dataset.nav === (name || "catalogue")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  closeMenu();
  if (!route) {
    document.title = "Not found · mliplake";
    view.append(h("h1", { tabindex: "-1", text: "Page not found" }), h("p", {}, h("a", { href: "#/catalogue", text: "Go to the catalogue" })));
    return;
  }
  document.title = `${route[1]} · mliplake`;
  try {
    const mod = await import(`./pages/${route[0]}.js`);
    if (token !== current) return;
    const fn = mod[route[2] || "render"];
    await fn(view, args, query);
  } catch (err) {
    if (token !== current) return;
    console.warn(err);
    view.append(errorBox(err, "This page could not be shown"));
  }
  await who; // the header's signed-in user, asked for alongside the page's own requests
  if (token === current) {
    view.dataset.ready = "1";
    const h1 = view.querySelector("h1");
    if (h1 && focusOnNav) { h1.setAttribute("tabindex", "-1"); h1.focus({ preventScroll: false }); }
    if (h1) announce(h1.textContent);
  }
}

let focusOnNav = false;
export async function refreshWho() {
  const who = document.getElementById("who");
  const u = await me(true);
  if (u.kind === "anonymous" || !u.name) {
    who.replaceChildren(h("a", { href: "#/signin", id: "signin-link", text: "Sign in" }));
  } else {
    who.replaceChildren(
      h("span", { class: "user", title: `roles: ${(u.roles || []).join(", ") || "reader"}; groups: ${(u.groups || []).join(", ") || "none"}` },
        h("span", { class: "sr-only", text: "Signed in as " }), u.name),
      h("button", { type: "button", class: "link", id: "signout", onclick: signOut, text: "Sign out" }));
  }
  return u;
}

export async function signOut() {
  await del("session").catch(() => {});
  localStorage.removeItem("mliplake-deposits"); // this browser's deposit list belongs to the one signed out
  forgetMe();
  await refreshWho();
  announce("Signed out");
  if (location.hash === "#/catalogue") navigate(); else location.hash = "#/catalogue";
}

function closeMenu() {
  const t = document.querySelector(".menu-toggle");
  if (t) { t.setAttribute("aria-expanded", "false"); document.getElementById("nav").classList.remove("open"); }
}

function start() {
  const toggle = document.querySelector(".menu-toggle");
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.getElementById("nav").classList.toggle("open", open);
  });
  window.addEventListener("hashchange", () => { focusOnNav = true; navigate(); });
  // the user and the first page at once: a page that needs the user awaits me(), the same request
  who = refreshWho().catch((err) => console.warn(err));
  navigate();
}

start();
