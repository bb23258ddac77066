// One node: static info, disks and interfaces, its schedules and last file
// transfer, and history charts (uPlot)
// over 1 h .. 1 y from /api/v1/nodes/{ref}/metrics (raw samples or rollups
// with min/max); drag to zoom, double-click to zoom out.
import { api, ApiError, bytes, duration, esc, num, pct, rate, stream, when } from "./api.js";

const RANGES = ["1h", "24h", "7d", "30d", "1y"];
const CHARTS = [
  { title: "CPU %", series: [["cpu_percent", "CPU"]], fmt: pct, max: 100 },
  { title: "Memory and swap %", series: [["mem_percent", "memory"], ["swap_percent", "swap"]], fmt: pct, max: 100 },
  { title: "Fullest disk %", series: [["disk_percent", "disk"]], fmt: pct, max: 100 },
  { title: "Load", series: [["load1", "1 min"], ["load5", "5 min"], ["load15", "15 min"]], fmt: (v) => num(v) },
  { title: "Network", series: [["net_rx_bps", "received"], ["net_tx_bps", "sent"]], fmt: rate },
  { title: "Disk I/O", series: [["disk_read_bps", "read"], ["disk_write_bps", "written"]], fmt: rate },
];
const COLORS = ["#2f7ed8", "#e4572e", "#29a36a"];

// A sample's value: the API says cpu_percent, older Cores said cpu.
const value = (s, key) => (key in s ? s[key] : key === "cpu_percent" ? s.cpu : undefined) ?? null;

function infoHtml(doc) {
  const info = doc.info || {};
  const s = doc.latest || {};
  const rows = [
    ["Status", doc.status],
    ["Labels", Object.entries(doc.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"],
    ["OS", info.os], ["Kernel", info.kernel], ["Architecture", info.arch],
    ["CPU", info.cpu_model ? `${info.cpu_model} × ${info.cpu_count ?? "?"}` : info.cpu_count],
    ["Memory", bytes(info.mem_total)], ["Booted", when(info.boot_time)],
    ["Uptime", duration(doc.uptime)], ["Agent", doc.agent_version], ["Last seen", when(doc.last_seen)],
    ["Processes", s.procs], ["Load", s.load1 == null ? "–" : `${num(s.load1)} ${num(s.load5)} ${num(s.load15)}`],
  ];
  const dl = rows.map(([k, v]) => `<dt>${k}</dt><dd>${esc(v ?? "–")}</dd>`).join("");
  const disks = (s.disks || [])
    .map((d) => `<tr><td>${esc(d.mount)}</td><td>${esc(d.fstype)}</td><td>${bytes(d.used)} / ${bytes(d.total)}</td><td>${pct(d.percent)}</td></tr>`)
    .join("");
  const nets = (s.nets || [])
    .map((n) => `<tr><td>${esc(n.name)}</td><td>${rate(n.rx_bps)}</td><td>${rate(n.tx_bps)}</td></tr>`)
    .join("");
  return (
    `<dl class="info">${dl}</dl>` +
    `<h3>Disks</h3><div class="scroll"><table><thead><tr><th>Mount</th><th>Type</th><th>Used</th><th>%</th></tr></thead><tbody>${disks || '<tr><td colspan="4">none reported</td></tr>'}</tbody></table></div>` +
    `<h3>Interfaces</h3><div class="scroll"><table><thead><tr><th>Name</th><th>Received</th><th>Sent</th></tr></thead><tbody>${nets || '<tr><td colspan="3">none reported</td></tr>'}</tbody></table></div>`
  );
}

// min / avg / max of a series between two times (the zoomed range).
function stats(ts, vals, lo, hi) {
  let min = Infinity, max = -Infinity, sum = 0, n = 0;
  for (let i = 0; i < ts.length; i++) {
    const v = vals[i];
    if (v == null || ts[i] < lo || ts[i] > hi) continue;
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
    n++;
  }
  return n ? { min, avg: sum / n, max } : null;
}

function chart(box, spec, samples, rollup) {
  const ts = samples.map((s) => s.ts);
  const data = [ts];
  const series = [{}];
  spec.series.forEach(([key, label], i) => {
    data.push(samples.map((s) => value(s, key)));
    series.push({ label, stroke: COLORS[i], width: 1.5, value: (u, v) => spec.fmt(v) });
    if (rollup) {
      for (const edge of ["min", "max"]) {
        data.push(samples.map((s) => value(s, `${key}_${edge}`)));
        series.push({ label: `${label} ${edge}`, stroke: COLORS[i] + "55", width: 1, dash: [4, 3], value: (u, v) => spec.fmt(v) });
      }
    }
  });
  const statsEl = document.createElement("p");
  statsEl.className = "stats";
  const showStats = (u) => {
    const lo = u.scales.x.min ?? -Infinity;
    const hi = u.scales.x.max ?? Infinity;
    statsEl.innerHTML = spec.series
      .map(([key, label], i) => {
        const st = stats(ts, data[1 + i * (rollup ? 3 : 1)], lo, hi);
        return st ? `<span>${esc(label)}: min ${spec.fmt(st.min)} · avg ${spec.fmt(st.avg)} · max ${spec.fmt(st.max)}</span>` : "";
      })
      .join("");
  };
  const opts = {
    width: Math.max(260, box.clientWidth - 8),
    height: 180,
    series,
    scales: spec.max ? { y: { range: [0, spec.max] } } : {},
    axes: [{}, { values: (u, vals) => vals.map((v) => spec.fmt(v)), size: 70 }],
    cursor: { drag: { x: true, y: false } },
    hooks: { setScale: [(u, key) => key === "x" && showStats(u)] },
  };
  // eslint-disable-next-line no-undef
  const u = new uPlot(opts, data, box);
  box.append(statsEl);
  showStats(u);
  return u;
}

// The schedules whose target picks this node now, and its last file
// transfer (the newest file.push or file.pull audit row, with its SHA-256).
async function opsHtml(doc) {
  const ref = encodeURIComponent(doc.name);
  const [schedules, pushes, pulls] = await Promise.all([
    api(`/api/v1/schedules?node=${encodeURIComponent(doc.id)}`),
    api(`/api/v1/audit?action=file.push&target=${ref}&limit=1`),
    api(`/api/v1/audit?action=file.pull&target=${ref}&limit=1`),
  ]);
  const rows = schedules
    .map(
      (s) =>
        `<tr><td>${esc(s.name)}</td><td>${esc(s.describe)}${s.paused ? " (paused)" : ""}</td>` +
        `<td>${esc(s.target)}</td><td>${when(s.next_run)}</td><td>${esc(s.last_job ?? "–")}</td>` +
        `<td><code>${esc(s.job.command ?? `${s.job.service?.action ?? ""} ${s.job.service?.unit ?? ""}`)}</code></td></tr>`,
    )
    .join("");
  const last = [...pushes, ...pulls].sort((a, b) => b.ts - a.ts)[0];
  const transfer = last
    ? `<p id="last-transfer">${esc(last.action)} · ${esc(last.detail)} · ${esc(last.outcome)} · ` +
      `${when(last.ts)} · by ${esc(last.principal)}</p>`
    : `<p id="last-transfer" class="muted">none yet (ctl cp)</p>`;
  return (
    `<h3>Schedules</h3><div class="scroll"><table id="schedules"><thead><tr><th>Name</th><th>When</th><th>Target</th><th>Next run</th><th>Last job</th><th>Command</th></tr></thead>` +
    `<tbody>${rows || '<tr><td colspan="6">none picks this node</td></tr>'}</tbody></table></div>` +
    `<h3>Last file transfer</h3>${transfer}`
  );
}

// The node's latest figures, live from the event stream.
function liveLine(n) {
  const on = n.status === "online";
  return (
    `<span class="dot ${on ? "on" : ""}"></span>${on ? "online" : "offline"}` +
    (on
      ? ` · CPU ${pct(n.cpu_percent)} · memory ${pct(n.mem_percent)} · disk ${pct(n.disk_percent)}` +
        ` · load ${num(n.load1)} · ↓${rate(n.net_rx_bps)} ↑${rate(n.net_tx_bps)}`
      : "") +
    ` · <span class="muted">${when(n.sample_ts ?? n.last_seen)}</span>`
  );
}

export function mount(view, ctx, ref) {
  let plots = [];
  let alive = true;
  let live = null;
  let range = "1h";
  view.innerHTML = `<p class="muted">Loading…</p>`;

  const resize = () => plots.forEach((u) => u.setSize({ width: Math.max(260, u.root.parentNode.clientWidth - 8), height: 180 }));
  window.addEventListener("resize", resize);

  const loadCharts = async () => {
    const box = view.querySelector("#charts");
    const note = view.querySelector("#chart-note");
    note.textContent = "loading…";
    let doc;
    try {
      doc = await api(`/api/v1/nodes/${encodeURIComponent(ref)}/metrics?since=${range}&limit=10000`);
    } catch (err) {
      ctx.error(view, err);
      return;
    }
    if (!alive) return;
    plots.forEach((u) => u.destroy());
    box.replaceChildren();
    const rollup = doc.step !== "raw";
    note.textContent = doc.samples.length
      ? `${doc.samples.length} points, ${rollup ? doc.step + " rollups (dashed: min and max)" : "raw samples"} · drag to zoom, double-click to reset`
      : `no ${rollup ? doc.step + " rollups" : "samples"} in this range yet (rollups are made every half minute or so)`;
    plots = CHARTS.map((spec) => {
      const card = document.createElement("div");
      card.className = "chart card";
      card.innerHTML = `<h3>${spec.title}</h3>`;
      box.append(card);
      return chart(card, spec, doc.samples, rollup);
    });
  };

  (async () => {
    let doc;
    try {
      doc = await api(`/api/v1/nodes/${encodeURIComponent(ref)}`);
    } catch (err) {
      view.replaceChildren();
      ctx.error(view, err);
      return;
    }
    if (!alive) return;
    const runLink = ctx.session.may.operate
      ? `<a class="button" href="#/run/${encodeURIComponent(doc.name)}">Run a command</a>`
      : "";
    const ranges = RANGES.map((r) => `<button type="button" data-range="${r}">${r}</button>`).join("");
    view.innerHTML =
      `<div class="title"><h2>${esc(doc.name)}</h2>${runLink}</div>` +
      `<p id="live" class="card live">${liveLine(doc)}</p>` +
      `<div class="card">${infoHtml(doc)}</div>` +
      `<div class="card" id="ops"><p class="muted">Loading schedules…</p></div>` +
      `<div class="toolbar"><span class="ranges">${ranges}</span><span id="chart-note" class="muted"></span></div>` +
      `<div id="charts" class="charts"></div>`;
    for (const b of view.querySelectorAll("[data-range]")) {
      b.classList.toggle("active", b.dataset.range === range);
      b.addEventListener("click", () => {
        range = b.dataset.range;
        view.querySelectorAll("[data-range]").forEach((x) => x.classList.toggle("active", x === b));
        loadCharts();
      });
    }
    loadCharts();
    opsHtml(doc).then(
      (html) => alive && (view.querySelector("#ops").innerHTML = html),
      (err) => alive && (view.querySelector("#ops").innerHTML = `<p class="muted">${esc(err.message)}</p>`),
    );
    let node = doc;
    let retry = 0;
    const connect = () => {
      live = stream(
        `/api/v1/events?types=node,heartbeat&history=0&interval=1&nodes=${encodeURIComponent(doc.id)}`,
        (msg) => {
          if (msg.type === "snapshot" && msg.nodes.length) node = msg.nodes[0];
          else if (msg.type === "heartbeats" && msg.nodes.length) node = msg.nodes[0];
          else if (msg.type === "node.online") node = msg.node;
          else if (msg.type === "node.offline") node = { ...node, status: "offline" };
          else return;
          retry = 0;
          view.querySelector("#live").innerHTML = liveLine(node);
        },
        (code, reason, error) => {
          if (!alive) return;
          if (error) {
            ctx.failed(new ApiError(code === 4401 ? 401 : 403, error.code, error.message));
            return;
          }
          retry = Math.min(retry + 1, 5); // Core restarted, or the token was revoked
          setTimeout(() => alive && connect(), retry * 1000);
        },
      );
    };
    connect();
  })();

  return () => {
    alive = false;
    if (live) live.close();
    window.removeEventListener("resize", resize);
    plots.forEach((u) => u.destroy());
  };
}
