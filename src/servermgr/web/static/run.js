// Run a command or a service action on a target (a node, a list, a label
// selector or every node): POST /api/v1/jobs, then the job's page shows
// each node's output live. Offered only to role operate and the core key.
import { api, esc } from "./api.js";

const ACTIONS = ["status", "start", "stop", "restart", "reload", "enable", "disable"];

export function targetSpec(mode, text) {
  if (mode === "all") return "*";
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .join(",");
}

export function mount(view, ctx, preset) {
  if (!ctx.session.may.operate) {
    view.innerHTML = `<p class="error">${esc(ctx.session.name)} (role ${esc(ctx.session.role)}) cannot run commands: that needs role operate or the core key.</p>`;
    return null;
  }
  const actions = ACTIONS.map((a) => `<option>${a}</option>`).join("");
  view.innerHTML = `
<form id="runform" class="card form">
  <h2>Run</h2>
  <fieldset><legend>Target</legend>
    <select id="mode" aria-label="Target kind">
      <option value="node">one node</option><option value="list">a list of nodes</option>
      <option value="label">nodes with labels</option><option value="all">every node</option>
    </select>
    <input id="target" list="node-names" placeholder="node name" autocomplete="off" spellcheck="false">
    <datalist id="node-names"></datalist>
  </fieldset>
  <fieldset><legend>What</legend>
    <label><input type="radio" name="kind" value="command" checked> command</label>
    <label><input type="radio" name="kind" value="service"> service action</label>
    <input id="command" placeholder="e.g. uptime" autocomplete="off" spellcheck="false">
    <span id="service" hidden>
      <select id="action" aria-label="Action">${actions}</select>
      <input id="unit" placeholder="unit, e.g. nginx.service" autocomplete="off" spellcheck="false">
    </span>
  </fieldset>
  <label>Timeout (seconds) <input id="timeout" type="number" min="1" max="604800" value="60"></label>
  <button id="run" type="submit">Run</button>
  <p id="run-error" class="error" role="alert"></p>
</form>`;
  const $ = (sel) => view.querySelector(sel);
  const placeholders = { node: "node name", list: "web-1, web-2", label: "role=web,env=prod", all: "" };
  $("#mode").addEventListener("change", () => {
    const mode = $("#mode").value;
    $("#target").hidden = mode === "all";
    $("#target").placeholder = placeholders[mode];
  });
  for (const r of view.querySelectorAll("[name=kind]")) {
    r.addEventListener("change", () => {
      const service = $("[name=kind]:checked").value === "service";
      $("#service").hidden = !service;
      $("#command").hidden = service;
    });
  }
  if (preset) $("#target").value = preset;
  api("/api/v1/nodes")
    .then((nodes) => {
      $("#node-names").innerHTML = nodes.map((n) => `<option value="${esc(n.name)}">`).join("");
    })
    .catch((err) => ctx.failed(err));

  $("#runform").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const mode = $("#mode").value;
    const target = targetSpec(mode, $("#target").value);
    const body = { target, timeout: Number($("#timeout").value) || 60 };
    if ($("[name=kind]:checked").value === "service") {
      body.service = { action: $("#action").value, unit: $("#unit").value.trim() };
    } else {
      body.command = $("#command").value;
    }
    $("#run-error").textContent = "";
    if (!target) {
      $("#run-error").textContent = "Choose a target.";
      return;
    }
    $("#run").disabled = true;
    try {
      const job = await api("/api/v1/jobs", { method: "POST", body });
      location.hash = `#/job/${encodeURIComponent(job.id)}`;
    } catch (err) {
      if (!ctx.failed(err)) $("#run-error").textContent = err.message;
      $("#run").disabled = false;
    }
  });
  return null;
}
