// The REST API from the portal: JSON in, JSON out, problem documents as ApiError; 429s retried.
// The browser's cookie (set by POST /api/v1/session) authenticates; scripts never see the token.

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, problem) {
    const title = (problem && problem.title) || `HTTP ${status}`;
    const detail = (problem && problem.detail) || "";
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.problem = problem || {};
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function request(method, path, { body, query, headers, signal, raw } = {}) {
  let url = path.startsWith("/") ? path : `${API}/${path}`;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  const init = { method, headers: { Accept: "application/json", ...(headers || {}) }, signal,
                 credentials: "same-origin" };
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer) init.body = body;
    else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  }
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(url, init);
    if ((r.status === 429 || r.status === 503) && attempt < 4) {
      const wait = Number(r.headers.get("Retry-After")) || 2 ** attempt;
      await sleep(Math.min(wait, 10) * 1000);
      continue;
    }
    if (r.status === 401 && !path.endsWith("session")) onUnauthorized(r);
    if (!r.ok) {
      let problem = {};
      try { problem = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, problem);
    }
    if (raw) return r;
    if (r.status === 204) return null;
    const type = r.headers.get("Content-Type") || "";
    return type.includes("json") ? r.json() : r.text();
  }
}

export const get = (path, query, opts) => request("GET", path, { ...(opts || {}), query });
export const post = (path, body, opts) => request("POST", path, { ...(opts || {}), body });
export const put = (path, body, opts) => request("PUT", path, { ...(opts || {}), body });
export const del = (path, opts) => request("DELETE", path, opts || {});

// a stale cookie (revoked or expired token) makes every request a 401: drop it once, say so
let dropping = false;
function onUnauthorized(r) {
  const www = r.headers.get("WWW-Authenticate") || "";
  if (dropping || !www.includes("invalid_token")) return;
  dropping = true;
  fetch(`${API}/session`, { method: "DELETE", credentials: "same-origin" }).finally(() => {
    location.assign("/?signed_out=expired#/signin"); // a fresh page: nothing of the old session stays
  });
}

let meCache = null;
export async function me(refresh = false) {
  if (!meCache || refresh) meCache = get("me").then((r) => r.data).catch(() => ({ kind: "anonymous", name: "", roles: [], groups: [] }));
  return meCache;
}
export function forgetMe() { meCache = null; }

export function filterOf(name) {
  return `dataset = "${String(name).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export function exportUrl(filter, format) {
  const q = new URLSearchParams({ format });
  if (filter) q.set("filter", filter);
  return `${API}/export?${q}`;
}
