// The fleet overview, live from the event stream (/api/v1/events): every
// node with its figures and a CPU/memory sparkline; filter, sort, counts.
import { ApiError, duration, esc, level, num, pct, rate, stream } from "./api.js";

const HISTORY = 60; // values per node in the sparkline
const OVERSCAN = 15; // rows drawn beyond each edge of the window
const COLUMNS = [
  ["name", "Node"],
  ["status", "Status"],
  ["cpu_percent", "CPU"],
  ["mem_percent", "Memory"],
  ["disk_percent", "Disk"],
  ["net", "Network"],
  ["load1", "Load"],
  ["history", "CPU / mem"],
  ["uptime", "Uptime"],
];

const sortValue = {
  name: (n) => n.name.toLowerCase(),
  status: (n) => (n.status === "online" ? 0 : 1),
  net: (n) => (n.net_rx_bps ?? -1) + (n.net_tx_bps ?? 0),
  history: (n) => n.cpu_percent ?? -1,
};

function labelText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`);
}

// Every word must be in the name or in one of the labels (as key=value).
export function matches(node, filter) {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const hay = [node.name.toLowerCase(), ...labelText(node.labels).map((l) => l.toLowerCase())];
  return words.every((w) => hay.some((h) => h.includes(w)));
}

export function order(nodes, key, desc) {
  const get = sortValue[key] || ((n) => n[key] ?? -1);
  const sign = desc ? -1 : 1;
  return nodes.sort((a, b) => {
    const x = get(a);
    const y = get(b);
    if (x < y) return -sign;
    if (x > y) return sign;
    return a.name < b.name ? -1 : 1;
  });
}

function spark(h) {
  if (!h || h.cpu.length < 2) return `<svg class="spark" viewBox="0 0 60 100"></svg>`;
  const line = (vals) => {
    const step = 60 / (HISTORY - 1);
    const start = HISTORY - vals.length;
    let out = "";
    for (let i = 0; i < vals.length; i++) {
      if (vals[i] != null) out += `${((start + i) * step).toFixed(1)},${(100 - vals[i]).toFixed(0)} `;
    }
    return out;
  };
  return (
    `<svg class="spark" viewBox="0 0 60 100" preserveAspectRatio="none" aria-hidden="true">` +
    `<polyline class="s-mem" points="${line(h.mem)}"/><polyline class="s-cpu" points="${line(h.cpu)}"/></svg>`
  );
}

function cell(key, label, value, cls = "") {
  return `<span class="c c-${key} ${cls}" data-label="${label}">${value}</span>`;
}

// One row per node, as HTML: node strings are escaped here and only here.
export function rowsHtml(nodes, history) {
  let out = "";
  for (const n of nodes) {
    const on = n.status === "online";
    const labels = labelText(n.labels)
      .map((l) => `<span class="label">${esc(l)}</span>`)
      .join("");
    out +=
      `<div class="row ${on ? "" : "off"}" data-id="${esc(n.id)}">` +
      `<span class="c c-name" title="${esc(n.name)}"><a href="#/node/${encodeURIComponent(n.id)}">${esc(n.name)}</a>${labels}</span>` +
      cell("status", "Status", `<span class="dot ${on ? "on" : ""}"></span>${on ? "online" : "offline"}`) +
      cell("cpu_percent", "CPU", pct(n.cpu_percent), level(n.cpu_percent)) +
      cell("mem_percent", "Memory", pct(n.mem_percent), level(n.mem_percent)) +
      cell("disk_percent", "Disk", pct(n.disk_percent), level(n.disk_percent)) +
      cell("net", "Network", `↓${rate(n.net_rx_bps)} ↑${rate(n.net_tx_bps)}`) +
      cell("load1", "Load", num(n.load1)) +
      cell("history", "CPU / mem", spark(history.get(n.id))) +
      cell("uptime", "Uptime", duration(n.uptime)) +
      `</div>`;
  }
  return out;
}

// The state of one overview, and its render (exported for bench/web_render.py).
// Only the rows in the window (and OVERSCAN beyond) are in the page, between
// two spacers: every row has the same height (app.css), so a render costs the
// same for 50 nodes or 20,000, and scrolling draws the rows that come into view.
export class Fleet {
  constructor(root) {
    this.root = root;
    this.nodes = new Map();
    this.history = new Map();
    this.filter = "";
    this.sort = "name";
    this.desc = false;
    this.pending = 0;
    this.shown = [];
    this.rowHeight = 0;
    this.drawn = "";
  }

  snapshot(msg) {
    this.nodes = new Map(msg.nodes.map((n) => [n.id, n]));
    this.history = new Map();
    for (const [id, h] of Object.entries(msg.history || {})) {
      this.history.set(id, { cpu: h.cpu_percent.slice(-HISTORY), mem: h.mem_percent.slice(-HISTORY) });
    }
  }

  beat(node) {
    this.nodes.set(node.id, node);
    let h = this.history.get(node.id);
    if (!h) this.history.set(node.id, (h = { cpu: [], mem: [] }));
    h.cpu.push(node.cpu_percent);
    h.mem.push(node.mem_percent);
    if (h.cpu.length > HISTORY) {
      h.cpu.shift();
      h.mem.shift();
    }
  }

  apply(msg) {
    if (msg.type === "snapshot") this.snapshot(msg);
    else if (msg.type === "heartbeats") msg.nodes.forEach((n) => this.beat(n));
    else if (msg.type === "node.online") this.nodes.set(msg.node.id, msg.node);
    else if (msg.type === "node.offline") {
      const n = this.nodes.get(msg.node_id);
      if (n) this.nodes.set(n.id, { ...n, status: "offline" });
    } else if (msg.type === "node.removed") this.nodes.delete(msg.node_id);
    else if (msg.type === "node.renamed") {
      const n = this.nodes.get(msg.node_id);
      if (n) this.nodes.set(n.id, { ...n, name: msg.name });
    } else return;
    this.schedule();
  }

  schedule() {
    if (!this.pending) this.pending = requestAnimationFrame(() => this.render());
  }

  render() {
    this.pending = 0;
    const all = [...this.nodes.values()];
    const online = all.filter((n) => n.status === "online").length;
    const shown = order(all.filter((n) => matches(n, this.filter)), this.sort, this.desc);
    this.root.querySelector("#counts").innerHTML =
      `<b>${all.length}</b> nodes · <b class="ok">${online}</b> online · ` +
      `<b class="${all.length - online ? "crit" : ""}">${all.length - online}</b> offline` +
      (shown.length !== all.length ? ` · ${shown.length} shown` : "");
    this.shown = shown;
    this.paint(true);
    for (const b of this.root.querySelectorAll("[data-sort]")) {
      b.classList.toggle("sorted", b.dataset.sort === this.sort);
      b.classList.toggle("desc", b.dataset.sort === this.sort && this.desc);
    }
  }

  // Draw the rows in the window; ``force``: even if the same rows are there.
  paint(force = false) {
    const rows = this.root.querySelector("#rows");
    const n = this.shown.length;
    const h = this.rowHeight || 40;
    const top = rows.getBoundingClientRect().top;
    const first = Math.min(n, Math.max(0, Math.floor(-top / h) - OVERSCAN));
    const last = Math.min(n, Math.max(first, Math.ceil((window.innerHeight - top) / h) + OVERSCAN));
    const key = `${first}:${last}:${n}`;
    if (!force && key === this.drawn) return;
    this.drawn = key;
    rows.innerHTML =
      `<div class="spacer"></div>` + rowsHtml(this.shown.slice(first, last), this.history) + `<div class="spacer"></div>`;
    rows.firstElementChild.style.height = `${first * h}px`;
    rows.lastElementChild.style.height = `${(n - last) * h}px`;
    if (!this.rowHeight && last > first) {
      this.rowHeight = rows.children[1].offsetHeight || 40;
      if (this.rowHeight !== h) this.paint(true);
    }
  }

  // After a scroll or a resize (a resize may change the row height).
  moved(resized) {
    if (resized) this.rowHeight = 0;
    if (!this.moving) {
      this.moving = requestAnimationFrame(() => {
        this.moving = 0;
        this.paint(resized);
      });
    }
  }
}

export function skeleton() {
  const heads = COLUMNS.map(
    ([key, title]) => `<button type="button" class="c c-${key}" data-sort="${key}">${title}</button>`,
  ).join("");
  const options = COLUMNS.map(([key, title]) => `<option value="${key}">${title}</option>`).join("");
  return (
    `<div class="toolbar"><span id="counts"></span><span id="live" class="muted"></span>` +
    `<input id="filter" type="search" placeholder="Filter by name or label" aria-label="Filter">` +
    `<label class="sortpick">Sort <select id="sortpick">${options}</select></label></div>` +
    `<div class="fleet"><div class="row head">${heads}</div><div id="rows"></div></div>`
  );
}

export function mount(view, ctx) {
  view.innerHTML = skeleton();
  const fleet = new Fleet(view);
  const live = view.querySelector("#live");
  let ws = null;
  let closed = false;
  let retry = 0;

  view.querySelector("#filter").addEventListener("input", (ev) => {
    fleet.filter = ev.target.value;
    fleet.schedule();
  });
  const sortBy = (key) => {
    fleet.desc = fleet.sort === key ? !fleet.desc : key !== "name" && key !== "status";
    fleet.sort = key;
    view.querySelector("#sortpick").value = key;
    fleet.schedule();
  };
  for (const b of view.querySelectorAll("[data-sort]")) {
    b.addEventListener("click", () => sortBy(b.dataset.sort));
  }
  view.querySelector("#sortpick").addEventListener("change", (ev) => sortBy(ev.target.value));

  const onScroll = () => fleet.moved(false);
  const onResize = () => fleet.moved(true);
  window.addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", onResize);

  const connect = () => {
    live.textContent = "connecting…";
    ws = stream(
      "/api/v1/events?types=node,heartbeat&history=60&interval=1",
      (msg) => {
        if (msg.type === "snapshot") {
          live.textContent = "live";
          retry = 0;
        }
        fleet.apply(msg);
      },
      (code, reason, error) => {
        if (closed) return;
        if (error && (code === 4401 || code === 4403)) {
          ctx.failed(new ApiError(code === 4401 ? 401 : 403, error.code, error.message));
          if (code === 4403) live.textContent = error.message;
          return;
        }
        retry = Math.min(retry + 1, 5);
        live.textContent = `disconnected; retrying in ${retry} s`;
        setTimeout(() => !closed && connect(), retry * 1000);
      },
    );
  };
  connect();
  return () => {
    closed = true;
    window.removeEventListener("scroll", onScroll);
    window.removeEventListener("resize", onResize);
    if (ws) ws.close();
  };
}
