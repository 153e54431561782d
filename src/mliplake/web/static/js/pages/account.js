// Signing in with a token (kept in an HttpOnly cookie by the server) and "my data".
import { get, post, me, forgetMe } from "../api.js";
import { h, table, errorBox, badge, route, section } from "../ui.js";
import { refreshWho, signOut } from "../app.js";
import { follow } from "./deposit.js";

export async function signin(view) {
  const user = await me();
  view.append(h("h1", { text: "Sign in" }));
  if (new URLSearchParams(location.search).get("signed_out") === "expired") {
    history.replaceState(null, "", "/#/signin");
    view.append(h("p", { class: "error", role: "alert", text: "Your token is no longer valid (expired or revoked): you have been signed out." }));
  }
  if (user.kind !== "anonymous") {
    view.append(h("p", {}, `You are signed in as ${user.name}. `, h("button", { type: "button", class: "secondary", onclick: signOut, text: "Sign out" })));
    return;
  }
  const token = h("input", { type: "password", id: "token", autocomplete: "off", required: true, spellcheck: "false",
    "aria-describedby": "token-help", class: "mono", size: 50 });
  const msg = h("div", { "aria-live": "assertive" });
  const form = h("form", { class: "card", id: "signin-form", onsubmit: async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    try {
      const u = (await post("session", { token: token.value.trim() })).data;
      token.value = "";
      forgetMe();
      await refreshWho();
      location.hash = "#/me";
      return u;
    } catch (err) {
      msg.replaceChildren(errorBox(err, "Not signed in"));
      token.focus();
    }
  } },
  h("div", { class: "field" }, h("label", { for: "token", text: "API token" }), token,
    h("span", { id: "token-help", class: "hint" }, "A token from ", h("code", { text: "mliplake tokens create" }),
      " (it starts with mlk_). It is kept in an HttpOnly cookie of this site, never in the page, until you sign out.")),
  h("button", { type: "submit", id: "signin-submit", text: "Sign in" }), msg);
  view.append(form);
}

export async function mine(view) {
  const user = await me();
  view.append(h("h1", { text: "My data" }));
  if (user.kind === "anonymous") {
    view.append(h("p", {}, "Sign in to see the datasets you own, your deposits and data shared with you. ",
      h("a", { href: "#/signin", text: "Sign in" })));
    return;
  }
  view.append(h("p", { class: "lede" }, `Signed in as ${user.name}`,
    user.roles && user.roles.length ? ` (${user.roles.join(", ")})` : "", user.groups && user.groups.length ? `; groups ${user.groups.join(", ")}` : "",
    ". ", h("button", { type: "button", class: "link", onclick: signOut, text: "Sign out" })));
  const [datasets, deposits] = await Promise.all([get("datasets").then((r) => r.data), get("deposits").then((r) => r.data)]);
  const owned = datasets.filter((d) => d.owner === user.name);
  const shared = datasets.filter((d) => d.owner !== user.name && d.visibility !== "public");
  const dsCols = [
    { key: "dataset", label: "Dataset", header: true, render: (d) => [h("a", { href: route("dataset", d.dataset), text: d.dataset }), " ", badge(d.visibility, d.embargo_until)] },
    { key: "title", label: "Title" }, { key: "visibility", label: "Visibility", render: (d) => d.visibility === "embargoed" ? `embargoed until ${String(d.embargo_until).slice(0, 10)}` : d.visibility },
    { key: "configurations", label: "Configurations", num: true }, { key: "quarantined", label: "Quarantined", num: true },
    { key: "deposits", label: "Deposits", num: true }];
  view.append(section("Datasets I own", table(dsCols, owned, { caption: "Owned", empty: "You own no dataset yet.", className: "owned", rowKey: (d) => d.dataset })));
  if (shared.length) view.append(section("Shared with me", table(dsCols, shared, { caption: "Private or embargoed datasets shared with you", rowKey: (d) => d.dataset })));
  const ownedNames = new Set(owned.map((d) => d.dataset));
  view.append(section("My deposits", table([
    { key: "deposit_id", label: "Deposit", header: true, render: (d) => h("code", { text: d.deposit_id }) },
    { key: "dataset", label: "Dataset", render: (d) => h("a", { href: route("dataset", d.dataset), text: d.dataset }) },
    { key: "created_at", label: "Deposited", render: (d) => String(d.created_at || "").replace("T", " ").slice(0, 19) },
    { key: "status", label: "Status" }, { key: "stored", label: "Stored", num: true }, { key: "quarantined", label: "Quarantined", num: true }],
  deposits.filter((d) => ownedNames.has(d.dataset)), { caption: "Deposits of datasets I own", empty: "No deposits." })));
  // HTTP deposits started from this browser, with their live status
  const local = JSON.parse(localStorage.getItem("mliplake-deposits") || "[]");
  if (local.length) {
    const box = section("Deposits from this browser");
    view.append(box);
    for (const d of local.slice(0, 10)) {
      const line = h("p", {}), report = h("div", {});
      box.append(h("div", { class: "local-deposit" }, line, report));
      follow(d.id, line, report).catch(() => { line.textContent = `${d.id} (${d.dataset}): no longer known`; });
    }
  }
}
