"""How long the web page's fleet overview takes to render N nodes, in a real browser.

Starts ``servermgr core serve``, opens its page in Debian's chromium (Playwright,
headless), signs in, then feeds the page's own overview code (``overview.js``:
the ``Fleet`` state and its ``render``, on the real page skeleton and style
sheet) a snapshot of N synthetic nodes with 60 CPU/memory values each, as the
event stream would. Times, with ``performance.now()`` in the page, median and
worst of ``--runs``:

- ``render``: build the rows, put them in the page and lay them out (a forced
  layout: ``offsetHeight``), what one render costs the page's main thread;
- ``to frame``: from the render's start to the next frame after it (style,
  layout and paint included);

for a fresh snapshot, a heartbeat update of every node, a scroll (drawing
the rows that came into view), and a filter that keeps a tenth of the nodes.
The overview draws only the rows in the window (plus 15 beyond each edge),
so "rows drawn" stays small whatever the fleet. The machine's load is
printed first: on a busy machine the figures are several times higher.
No thresholds: the figures are printed.

Examples::

    python bench/web_render.py
    python bench/web_render.py --quick
    python bench/web_render.py --nodes 1000 5000 --width 360
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import benchlib

SCRIPT = """
async ([count, runs]) => {
  const { Fleet, skeleton } = await import("/web/overview.js");
  const view = document.getElementById("view");
  view.innerHTML = skeleton();
  const fleet = new Fleet(view);
  const now = Date.now() / 1000;
  const node = (i, t) => ({
    id: "n" + i.toString(16).padStart(16, "0"), name: `node-${i}`,
    status: i % 50 === 0 ? "offline" : "online",
    labels: { role: ["web", "db", "cache"][i % 3], env: i % 2 ? "prod" : "staging" },
    first_seen: now - 86400, last_seen: now, connected_at: now - 3600,
    agent_version: "0.1.0", sample_ts: now,
    cpu_percent: (i * 7 + t) % 100, mem_percent: (i * 13 + t) % 100,
    disk_percent: (i * 3) % 100, net_rx_bps: i * 1000 + t, net_tx_bps: i * 500,
    load1: (i % 8) / 2, uptime: 86400 + i, procs: 100 + i,
  });
  const nodes = Array.from({ length: count }, (_, i) => node(i, 0));
  const history = {};
  for (const n of nodes) {
    history[n.id] = {
      ts: Array.from({ length: 60 }, (_, k) => now - 60 + k),
      cpu_percent: Array.from({ length: 60 }, (_, k) => (k * 3 + n.cpu_percent) % 100),
      mem_percent: Array.from({ length: 60 }, (_, k) => (k + n.mem_percent) % 100),
    };
  }
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const time = async (prepare) => {
    const renders = [], frames = [];
    for (let r = 0; r < runs; r++) {
      prepare(r);
      await frame();
      const t0 = performance.now();
      fleet.render();
      void view.offsetHeight;
      const t1 = performance.now();
      await frame();
      renders.push(t1 - t0);
      frames.push(performance.now() - t0);
    }
    const drawn = view.querySelectorAll("#rows .row").length;
    return { renders, frames, rows: fleet.shown.length, drawn };
  };
  const out = {};
  out.snapshot = await time(() => fleet.apply({ type: "snapshot", nodes, history }));
  out.heartbeats = await time((r) =>
    fleet.apply({ type: "heartbeats", nodes: nodes.map((n, i) => node(i, r + 1)) }));
  const scroller = document.scrollingElement;
  const paint = async () => {
    const renders = [], frames = [];
    for (let r = 0; r < runs; r++) {
      scroller.scrollTop = ((r + 1) / (runs + 1)) * (scroller.scrollHeight - innerHeight);
      await frame();
      const t0 = performance.now();
      fleet.paint();
      void view.offsetHeight;
      const t1 = performance.now();
      await frame();
      renders.push(t1 - t0);
      frames.push(performance.now() - t0);
    }
    scroller.scrollTop = 0;
    const drawn = view.querySelectorAll("#rows .row").length;
    return { renders, frames, rows: fleet.shown.length, drawn };
  };
  out.scroll = await paint();
  fleet.filter = "node-1";
  out.filter = await time(() => {});
  fleet.filter = "";
  out.width = document.documentElement.scrollWidth;
  return out;
}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 nodes, 3 runs")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.runs = [100, 1000], 3
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("web_render: needs chromium and playwright (pip install -e '.[test]'); skipped")
        return 0
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    rows: list[list[Any]] = []
    doc: dict[str, Any] = {"width": args.width, "runs": args.runs, "results": []}
    with benchlib.workdir("web-render-") as base, benchlib.Procs() as procs:
        core = benchlib.start_core(procs, base)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(core.url + "/")
            page.fill("#token", core.key)
            page.click("#signin button")
            page.wait_for_selector("#rows", state="attached", timeout=15000)
            for count in args.nodes:
                result = page.evaluate(SCRIPT, [count, args.runs])
                for what in ("snapshot", "heartbeats", "scroll", "filter"):
                    r = result[what]
                    rows.append(
                        [
                            count,
                            what,
                            r["rows"],
                            r["drawn"],
                            f"{benchlib.median(r['renders']):.1f}",
                            f"{max(r['renders']):.1f}",
                            f"{benchlib.median(r['frames']):.1f}",
                            f"{max(r['frames']):.1f}",
                        ]
                    )
                    doc["results"].append({"nodes": count, "case": what, **r})
                doc["results"].append({"nodes": count, "scroll_width": result["width"]})
            browser.close()
    benchlib.print_table(
        f"Web overview render, chromium headless, {args.width} px wide, {args.runs} runs",
        [
            "nodes",
            "case",
            "rows matched",
            "rows drawn",
            "render ms (median)",
            "render ms (max)",
            "to frame ms (median)",
            "to frame ms (max)",
        ],
        rows,
    )
    benchlib.write_json(None if args.json is None else Path(args.json), doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
