// The page's one way to Core: REST with the token as a bearer, WebSockets
// that send the token as their first message. The token lives in this tab's
// sessionStorage only (never a URL, a cookie or localStorage): it survives a
// reload, is gone when the tab closes, and sign-out removes it.

const KEY = "servermgr.token";
const SUBPROTOCOL = "servermgr.auth-message";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  forget: () => sessionStorage.removeItem(KEY),
};

// GET (or another method with a JSON body); the answer's JSON, else ApiError.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", `cannot reach Core: ${err.message}`);
  }
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!res.ok) {
    const e = (doc && doc.error) || {};
    throw new ApiError(res.status, e.code || "http_" + res.status, e.message || res.statusText);
  }
  return doc;
}

// A WebSocket on ``path`` authenticated by its first message. ``onMessage``
// gets every parsed message after that; ``onClose(code, reason, error)`` once.
export function stream(path, onMessage, onClose) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, [SUBPROTOCOL]);
  let error = null;
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: token.get() || "" }));
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "error" && msg.error) {
      error = msg.error;
      return;
    }
    onMessage(msg);
  };
  ws.onclose = (ev) => onClose && onClose(ev.code, ev.reason, error);
  return ws;
}

// --- formatting: every node string goes through esc() before innerHTML ---

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);

export const pct = (v) => (v == null ? "–" : `${v.toFixed(v < 10 ? 1 : 0)}%`);
export const num = (v, d = 2) => (v == null ? "–" : v.toFixed(d));

export function bytes(v) {
  if (v == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${units[i]}`;
}

export const rate = (v) => (v == null ? "–" : `${bytes(v)}/s`);

export function duration(s) {
  if (s == null) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function when(ts) {
  if (ts == null) return "–";
  return new Date(ts * 1000).toLocaleString();
}

// The level class of a percentage: ok, warn (80+) or crit (95+).
export const level = (v) => (v == null ? "" : v >= 95 ? "crit" : v >= 80 ? "warn" : "ok");
