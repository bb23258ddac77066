// Job history, one job (its output live from /api/v1/jobs/{id}/ws, then
// the per-node summary), and the audit log.
import { api, ApiError, duration, esc, stream, when } from "./api.js";

const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "refused", "expired", "lost"]);
const what = (j) => (j.command != null ? j.command : j.service ? `systemctl ${j.service.action} ${j.service.unit}` : "");
const stateClass = (s) => (s === "succeeded" ? "ok" : FINAL.has(s) ? "crit" : "warn");

export const history = {
  mount(view, ctx) {
    view.innerHTML = `<h2>Jobs</h2><p class="muted">Loading…</p>`;
    api("/api/v1/jobs?limit=200")
      .then((doc) => {
        const rows = doc.jobs
          .map((j) => {
            const counts = Object.entries(j.states).map(([s, n]) => `<span class="${stateClass(s)}">${n} ${esc(s)}</span>`).join(" ");
            return (
              `<tr><td><a href="#/job/${encodeURIComponent(j.id)}">${esc(j.id)}</a></td><td>${when(j.created)}</td>` +
              `<td><code>${esc(what(j))}</code></td><td>${esc(j.target)}</td><td>${esc(j.principal)}</td><td>${counts}</td></tr>`
            );
          })
          .join("");
        view.innerHTML =
          `<h2>Jobs</h2><div class="scroll"><table class="list"><thead><tr><th>Job</th><th>Started</th><th>What</th><th>Target</th><th>By</th><th>Nodes</th></tr></thead>` +
          `<tbody>${rows || '<tr><td colspan="6">no jobs yet</td></tr>'}</tbody></table></div>`;
      })
      .catch((err) => ctx.error(view, err));
    return null;
  },
};

export const audit = {
  mount(view, ctx) {
    view.innerHTML = `<h2>Audit log</h2><p class="muted">Loading…</p>`;
    api("/api/v1/audit?limit=200")
      .then((entries) => {
        const rows = entries
          .map(
            (a) =>
              `<tr><td>${when(a.ts)}</td><td>${esc(a.principal)}</td><td>${esc(a.action)}</td><td>${esc(a.target)}</td>` +
              `<td><code>${esc(a.detail)}</code></td><td>${a.job_id ? `<a href="#/job/${encodeURIComponent(a.job_id)}">${esc(a.job_id)}</a>` : ""}</td><td>${esc(a.outcome ?? (a.job_id ? "running" : "–"))}</td></tr>`,
          )
          .join("");
        view.innerHTML =
          `<h2>Audit log</h2><div class="scroll"><table class="list"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Detail</th><th>Job</th><th>Outcome</th></tr></thead>` +
          `<tbody>${rows || '<tr><td colspan="7">nothing yet</td></tr>'}</tbody></table></div>`;
      })
      .catch((err) => ctx.error(view, err));
    return null;
  },
};

// One node's part of a job: its state and its two output streams.
class NodeRun {
  constructor(box, node) {
    this.el = document.createElement("section");
    this.el.className = "noderun card";
    this.el.innerHTML = `<h3><span class="name"></span> <span class="state"></span></h3><pre class="out"></pre>`;
    this.el.querySelector(".name").textContent = node;
    this.pre = this.el.querySelector(".out");
    this.got = { stdout: 0, stderr: 0 };
    this.decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    box.append(this.el);
  }

  output(msg) {
    const raw = Uint8Array.from(atob(msg.data), (c) => c.charCodeAt(0));
    const skip = this.got[msg.stream] - msg.offset; // bytes already shown
    if (skip >= raw.length) return;
    const fresh = skip > 0 ? raw.subarray(skip) : raw;
    this.got[msg.stream] = msg.offset + raw.length;
    const span = document.createElement("span");
    span.className = msg.stream;
    span.textContent = this.decoders[msg.stream].decode(fresh, { stream: true });
    this.pre.append(span);
  }

  state(msg) {
    const st = this.el.querySelector(".state");
    let text = msg.state;
    if (msg.exit_code != null) text += `, exit ${msg.exit_code}`;
    if (msg.signal != null) text += `, signal ${msg.signal}`;
    if (msg.duration != null) text += `, ${duration(msg.duration)}`;
    if (msg.error) text += ` (${msg.error})`;
    st.textContent = text;
    st.className = `state ${stateClass(msg.state)}`;
    this.final = FINAL.has(msg.state);
    this.lastState = msg.state;
  }
}

export const detail = {
  mount(view, ctx, jobId) {
    view.innerHTML =
      `<div class="title"><h2>Job <code>${esc(jobId)}</code></h2><button id="cancel" type="button" hidden>Cancel</button></div>` +
      `<div class="card"><p id="jobwhat"></p><p id="summary" class="summary">connecting…</p></div><div id="noderuns"></div>`;
    const box = view.querySelector("#noderuns");
    const runs = new Map();
    const runOf = (msg) => {
      let r = runs.get(msg.node_id);
      if (!r) runs.set(msg.node_id, (r = new NodeRun(box, msg.node)));
      return r;
    };
    const summary = (done) => {
      const counts = {};
      for (const r of runs.values()) counts[r.lastState || "queued"] = (counts[r.lastState || "queued"] || 0) + 1;
      view.querySelector("#summary").innerHTML =
        (done ? "done: " : "running: ") +
        Object.entries(counts).map(([s, n]) => `<span class="${stateClass(s)}">${n} ${esc(s)}</span>`).join(" · ");
      view.querySelector("#cancel").hidden = done || !ctx.session.may.operate;
    };
    let done = false;
    const ws = stream(
      `/api/v1/jobs/${encodeURIComponent(jobId)}/ws`,
      (msg) => {
        if (msg.type === "job") {
          const j = msg.job;
          view.querySelector("#jobwhat").innerHTML =
            `<code>${esc(what(j))}</code> on <b>${esc(j.target)}</b> by ${esc(j.principal)}, ${when(j.created)}, timeout ${duration(j.timeout)}`;
          for (const n of j.nodes) runOf(n).state(n);
        } else if (msg.type === "job.output") runOf(msg).output(msg);
        else if (msg.type === "job.state") runOf(msg).state(msg);
        else if (msg.type === "job.done") done = true;
        summary(done);
      },
      (code, reason, error) => {
        if (error && (code === 4401 || code === 4403)) {
          ctx.failed(new ApiError(code === 4401 ? 401 : 403, error.code, error.message));
        } else if (error) {
          ctx.error(view, new ApiError(0, error.code, error.message));
        } else if (!done) {
          view.querySelector("#summary").textContent = `stream closed (${code} ${reason}); reload to see the rest`;
        }
      },
    );
    view.querySelector("#cancel").addEventListener("click", async () => {
      try {
        await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
      } catch (err) {
        ctx.error(view, err);
      }
    });
    return () => ws.close();
  },
};
