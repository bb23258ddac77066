// Entry point: sign-in, who the token is (GET /api/v1/whoami), and the
// views by the address's hash (#/, #/node/ID, #/run, #/jobs, #/job/ID, #/audit).
import { api, ApiError, esc, token } from "./api.js";
import * as overview from "./overview.js";
import * as node from "./node.js";
import * as run from "./run.js";
import * as jobs from "./jobs.js";

const $ = (id) => document.getElementById(id);
let session = null; // {name, role, may: {read, operate, admin}}
let unmount = null;

const ROUTES = [
  [/^#?\/?$/, overview, "overview"],
  [/^#\/node\/([^/]+)$/, node, "overview"],
  [/^#\/run(?:\/(.+))?$/, run, "run"],
  [/^#\/jobs$/, jobs.history, "jobs"],
  [/^#\/job\/([^/]+)$/, jobs.detail, "jobs"],
  [/^#\/audit$/, jobs.audit, "audit"],
];

function showSignIn(message) {
  session = null;
  if (unmount) unmount();
  unmount = null;
  $("view").replaceChildren();
  $("bar").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

async function signIn(value) {
  token.set(value);
  try {
    session = await api("/api/v1/whoami");
  } catch (err) {
    token.forget();
    let why = err.message;
    if (err.status === 401) why = `Wrong, revoked or expired key or token: ${err.message}`;
    if (err.status === 403) why = `This token cannot look at the fleet: ${err.message}`;
    showSignIn(why);
    return;
  }
  $("signin").hidden = true;
  $("token").value = "";
  $("bar").hidden = false;
  $("who").textContent = `${session.name} (${session.role})`;
  for (const el of document.querySelectorAll("[data-needs]")) {
    el.hidden = !session.may[el.dataset.needs];
  }
  route();
}

export function signOut(message) {
  token.forget();
  showSignIn(message);
}

// What views get: the session, and a way to say the token stopped working.
const ctx = {
  get session() {
    return session;
  },
  failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut(`Signed out: ${err.message}`);
      return true;
    }
    return false;
  },
  error(view, err) {
    if (!ctx.failed(err)) {
      view.insertAdjacentHTML("afterbegin", `<p class="error" role="alert">${esc(err.message)}</p>`);
    }
  },
};

function route() {
  if (!session) return;
  if (unmount) unmount();
  unmount = null;
  const hash = location.hash || "#/";
  const view = $("view");
  view.replaceChildren();
  for (const [re, mod, nav] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === nav);
    }
    unmount = mod.mount(view, ctx, ...m.slice(1).map((v) => (v == null ? v : decodeURIComponent(v)))) || null;
    return;
  }
  view.innerHTML = `<p class="error">No such page. <a href="#/">Overview</a></p>`;
}

$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value.trim();
  if (value) signIn(value);
});
$("signout").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", route);

if (token.get()) signIn(token.get());
else showSignIn("");
