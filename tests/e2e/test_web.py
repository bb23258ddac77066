"""The web page in a real browser (Debian's chromium driven by Playwright) against a
real ``servermgr core serve`` with real ``servermgr node run`` agents.

One browser for the module; each test starts its own Core and nodes. Screenshots
of the overview, a node page and a job go to ``web-artifacts/`` under pytest's
temporary directory (the path is printed); docs/ holds copies of such screenshots.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.fleet import Fleet, cap, start_core
from tests.support import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 15_000

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        why = f"no chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI runs the browser tests)")
        pytest.skip(why)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "web-artifacts"
    path.mkdir(exist_ok=True)
    print(f"web screenshots in {path}")
    return path


def fleet_of(fleet: Fleet, names: list[str]) -> tuple[str, str]:
    """A Core and ``names`` as real agents, all online; (Core's URL, core key)."""
    port = free_port()
    _, key = start_core(fleet, port)
    for name in names:
        fleet.spawn(name, "node", "run", "--config", str(fleet.node_config(name, port, key)))
    url = f"http://127.0.0.1:{port}"
    env = {"SERVERMGR_CORE": url, "SERVERMGR_KEY": key}

    def online() -> bool:
        listed = fleet.ctl_items("nodes", env=env) or []
        return sum(n["status"] == "online" for n in listed) == len(names)

    fleet.poll("every node online", online, 15)
    return url, key


def token(fleet: Fleet, role: str, name: str) -> str:
    res = fleet.run("key", "create", "--role", role, "--name", name, "--config", "core.toml")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()[0]


def sign_in(page: object, url: str, credential: str) -> None:
    page.goto(url + "/")  # type: ignore[attr-defined]
    page.fill("#token", credential)  # type: ignore[attr-defined]
    page.click("#signin button")  # type: ignore[attr-defined]


@cap(90)
def test_sign_in_watch_the_fleet_open_a_node_and_run_a_command(
    fleet: Fleet, browser: object, artifacts: Path
) -> None:
    url, key = fleet_of(fleet, ["node-01", "node-02"])
    context = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        sign_in(page, url, key)
        # The overview lists both nodes, online, with live figures.
        page.wait_for_selector("#rows .row >> nth=1", timeout=WAIT_MS)
        assert page.inner_text("#counts").startswith("2 nodes")
        assert "2 online" in page.inner_text("#counts")
        # Functions, not expressions: the page's CSP forbids eval, which Playwright
        # would use to evaluate an expression string while polling.
        page.wait_for_function(
            "() => [...document.querySelectorAll('#rows .c-cpu_percent')]"
            ".filter(c => c.textContent.includes('%')).length === 2",
            timeout=WAIT_MS,
        )
        page.fill("#filter", "node-02")
        page.wait_for_function("() => document.querySelectorAll('#rows .row').length === 1")
        assert "node-02" in page.inner_text("#rows")
        page.fill("#filter", "")
        page.screenshot(path=str(artifacts / "web-overview.png"))

        # A schedule that picks node-01 and a file copied to it: its page lists both.
        env = {"SERVERMGR_CORE": url, "SERVERMGR_KEY": key}
        made = fleet.run(
            "ctl", "schedule", "add", "hourly", "--every", "1h", "node-01", "uptime", env=env
        )
        assert made.returncode == 0, made.stderr
        (fleet.tmp / "motd").write_text("hello\n")
        copied = fleet.run("ctl", "cp", "motd", f"node-01:{fleet.tmp}/motd-copy", env=env)
        assert copied.returncode == 0, copied.stderr

        # The node page draws its charts (uPlot canvases) with min/avg/max.
        page.click("#rows a:text-is('node-01')")
        page.wait_for_selector(".chart canvas", timeout=WAIT_MS)
        assert page.locator(".chart").count() == 6
        page.wait_for_selector(".stats:has-text('avg')", timeout=WAIT_MS)
        assert "node-01" in page.inner_text("h2")
        page.wait_for_selector("#live:has-text('online'):has-text('CPU')", timeout=WAIT_MS)
        page.wait_for_selector(
            "#schedules:has-text('hourly'):has-text('every 1h')", timeout=WAIT_MS
        )
        sha = hashlib.sha256(b"hello\n").hexdigest()
        assert f"file.push · {fleet.tmp}/motd-copy size=6 sha256={sha}" in page.inner_text(
            "#last-transfer"
        )
        page.screenshot(path=str(artifacts / "web-node.png"), full_page=True)

        # Run a command on it: its output appears, the summary says done.
        page.click("text=Run a command")
        page.wait_for_selector("#command")
        assert page.input_value("#target") == "node-01"
        page.fill("#command", "echo hello from $(hostname) && uptime")
        page.click("#run")
        page.wait_for_selector("#summary:has-text('done')", timeout=WAIT_MS)
        out = page.inner_text("#noderuns")
        assert "hello from" in out
        assert "load average" in out
        assert "succeeded, exit 0" in out
        page.screenshot(path=str(artifacts / "web-job.png"))

        # A service action on every node: each node's part ends (whether this
        # machine has systemd or not) and the summary counts both.
        page.click("a[data-nav=run]")
        page.select_option("#mode", "all")
        page.check("[name=kind][value=service]")
        page.select_option("#action", "status")
        page.fill("#unit", "servermgr-web-test.service")
        page.click("#run")
        page.wait_for_selector("#summary:has-text('done')", timeout=WAIT_MS)
        assert page.locator(".noderun").count() == 2
        assert "systemctl status servermgr-web-test.service" in page.inner_text("#jobwhat")

        # Both jobs are in the history and the audit log.
        page.click("a[data-nav=jobs]")
        page.wait_for_selector("table.list td code:has-text('echo hello')", timeout=WAIT_MS)
        assert page.locator("table.list tbody tr").count() == 2
        page.click("a[data-nav=audit]")
        page.wait_for_selector(
            "table.list td:has-text('systemctl status servermgr-web-test.service')",
            timeout=WAIT_MS,
        )
        assert "core-key" in page.inner_text("table.list")

        # A phone-sized window: no horizontal scrolling.
        page.set_viewport_size({"width": 360, "height": 740})
        page.click("a[data-nav=overview]")
        page.wait_for_selector("#rows .row >> nth=1", timeout=WAIT_MS)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the overview is {width} px wide on a 360 px screen"
        page.screenshot(path=str(artifacts / "web-phone.png"))

        # Sign-out forgets the token: a reload shows the sign-in form.
        page.click("#signout")
        page.reload()
        page.wait_for_selector("#signin:not([hidden])", timeout=WAIT_MS)
        assert page.evaluate("sessionStorage.length") == 0
    finally:
        context.close()
    assert not errors, errors


@cap(60)
def test_a_read_token_sees_no_run_controls_and_a_wrong_token_is_refused(
    fleet: Fleet, browser: object
) -> None:
    url, _ = fleet_of(fleet, ["node-01"])
    viewer = token(fleet, "read", "viewer")
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        sign_in(page, url, "t0123456789abcdef.wrong")
        page.wait_for_selector("#signin-error:has-text('Wrong')", timeout=WAIT_MS)
        assert page.is_visible("#signin")
        assert page.evaluate("sessionStorage.length") == 0

        sign_in(page, url, viewer)
        page.wait_for_selector("#rows .row", timeout=WAIT_MS)
        assert "viewer (read)" in page.inner_text("#who")
        assert not page.is_visible("a[data-nav=run]")
        page.click("#rows a:text-is('node-01')")
        page.wait_for_selector(".chart canvas", timeout=WAIT_MS)
        assert page.locator("text=Run a command").count() == 0

        # Revoked while signed in (on the node page, live): the page says so.
        res = fleet.run("key", "revoke", "viewer", "--config", "core.toml")
        assert res.returncode == 0, res.stderr

        # Core re-reads the token table each second, then ends the page's live
        # stream; its reconnect is refused and the page signs out by itself.
        page.wait_for_selector("#signin:not([hidden])", timeout=WAIT_MS)
        assert "Signed out" in page.inner_text("#signin-error")
        assert "revoked" in page.inner_text("#signin-error")
    finally:
        context.close()
