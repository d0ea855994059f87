"""The web console in a real browser: Playwright drives Debian's Chromium against a real
cumulod serving HTTPS (its self-signed certificate accepted as a user would), the
browser in a netns of its own. Sign in, launch from the form, use the terminal, watch
a graph, stop and delete; a VM's serial console; a bad launch shows the API's error; a
viewer sees but may not act.

One browser for the module, a fresh page (and sessionStorage) per test; every page must
end with no console errors. Screenshots go to the test's tmp dir (the path is printed;
kept when a test failed), or to $CUMULO_SCREENSHOTS/TEST when that is set.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.client import APIError
from tests.system.conftest import Daemon, running_daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000          # one UI step (Playwright's waits are bounded by it)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d49444154789c63f8cfc0f01f00050001ff89993d1d0000000049454e44"
                    "ae426082")   # 1x1 pixel
LOOP = 'trap "exit 0" TERM; while :; do sleep 1; done'   # PID 1 that stops on SIGTERM
SHELL = f"sh -c 'echo pid1-up; {LOOP}'"                   # the same, typed in the form

if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: run scripts/install.sh", allow_module_level=True)
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright: pip install -e .[dev]")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser_net() -> Iterator[tuple[str, str]]:
    """A netns of its own for the browser, joined to the host by a veth: Chromium aborts
    its requests with ERR_NETWORK_CHANGED when addresses come and go in its netns, and
    the other tests' bridges and veths come and go in the host's. Yields the netns and
    the host end's address (where the daemon listens)."""
    tag = uuid.uuid4().hex[:8]
    ns, host_if = f"cu-t-ui{tag}", f"cu-t-ui{tag}"[:15]
    third = int(tag[:2], 16)
    host_ip, ns_ip = f"10.251.{third}.1", f"10.251.{third}.2"
    cmds = [["ip", "netns", "add", ns],
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns],
            ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"]]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, timeout=30)
        yield ns, host_ip
    finally:
        subprocess.run(["ip", "link", "delete", host_if], check=False, timeout=30,
                       capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, browser_net: tuple[str, str]
        ) -> Iterator[tuple[Daemon, str]]:
    """A cumulod serving HTTPS on the browser's veth (history every second), with busybox
    built."""
    host = browser_net[1]
    port = free_port(host)
    with running_daemon(tmp_path_factory.mktemp("web"),
                        ("--listen", f"{host}:{port}", "--history-interval", "1")) as d:
        d.cli("image", "build", "busybox")
        yield d, f"https://{host}:{port}"


@pytest.fixture(scope="module")
def browser_context(browser_net: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Any]:
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter --net=/run/netns/{browser_net[0]}'
                       f' {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=str(wrapper), args=ARGS, headless=True,
            viewport={"width": 1280, "height": 800},
            ignore_https_errors=True)   # self-signed: the fingerprint is checked below
        ctx.set_default_timeout(WAIT_MS)
        try:
            yield ctx
        finally:
            ctx.close()


class Page:
    """A browser tab that records console errors and takes named screenshots."""

    def __init__(self, ctx: Any, shots: Path) -> None:
        self.page = ctx.new_page()
        self.shots = shots
        self.errors: list[str] = []
        self.expected: list[str] = []   # errors the test provokes on purpose
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(x in e for x in self.expected)]


@pytest.fixture
def tab(browser_context: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    keep = os.environ.get("CUMULO_SCREENSHOTS")
    shots = Path(keep) / request.node.name if keep else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    t = Page(browser_context, shots)
    try:
        yield t
    finally:
        t.shot("last")   # where the test ended (or failed)
        t.page.close()
    assert not t.unexpected(), f"console errors: {t.unexpected()}"


def token(d: Daemon, name: str, role: str = "admin") -> str:
    return d.cli("identity", "create", name, "--role", role).stdout.strip()


def signed_in(d: Daemon, base: str, t: Page, where: str = "#/instances") -> None:
    """Open the console with the URL `cumulo ui` prints, then go to ``where``."""
    ui = d.cli("ui")
    url = ui.stdout.strip()
    assert url.startswith(f"{base}/ui/#token="), url
    # the fingerprint to compare with the browser's is the one the daemon serves
    served = _served_fingerprint(base)
    assert ":".join(served[i:i + 2] for i in range(0, 64, 2)).upper() in ui.stderr, ui.stderr
    t.page.goto(url)
    t.page.wait_for_selector("#live.on")        # the events websocket is up
    t.page.evaluate("h => { location.hash = h; }", where)


def _served_fingerprint(base: str) -> str:
    host, port = base.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def screen_text(t: Page) -> str:
    return str(t.page.inner_text(".xterm-rows")).replace("\u00a0", " ")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.2)


def slow(route: Any) -> None:
    """A page module that loads late (a busy host): whatever comes meanwhile comes first."""
    time.sleep(1)
    route.continue_()


def test_sign_in_with_a_token(web: tuple[Daemon, str], tab: Page) -> None:
    d, base = web
    page = tab.page
    page.goto(f"{base}/ui/")
    page.fill("#token", "not-a-token")
    page.click("form.signin button[type=submit]")
    tab.expected.append("status of 401")       # the refused GET /1.0
    page.wait_for_selector("form.signin .msg.error:not([hidden])")
    assert "not accepted" in page.inner_text("form.signin .msg.error")
    assert "cumulo identity create" in page.inner_text("#token-help")
    page.fill("#token", token(d, "browser"))
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#live.on")
    page.wait_for_selector("h1:text('Instances')")
    tab.shot("signed-in")
    # a revoked token: the next call is refused and the page asks to sign in again, even
    # when the refusal (the events websocket's closing) comes while a page is loading
    page.route("**/js/pages/images.js", slow)
    d.cli("identity", "revoke", "browser")
    page.evaluate("location.hash = '#/images'")
    page.wait_for_selector("form.signin .msg.error:text('no longer accepted')")
    page.unroute("**/js/pages/images.js")
    page.wait_for_timeout(500)   # the slowed page has loaded by now: the form stays
    assert page.is_visible("form.signin .msg.error:text('no longer accepted')")
    # the token of `cumulo ui` is taken from the URL's fragment and dropped from it
    signed_in(d, base, tab)
    assert "token=" not in page.url
    # keyboard: g then l opens the launch form with its first field focused
    page.locator("body").press("g")
    page.locator("body").press("l")
    page.wait_for_url(re.compile(r"#/launch$"))
    page.wait_for_selector("input[name=name]:focus")


def test_a_viewer_sees_but_may_not_act(web: tuple[Daemon, str], tab: Page) -> None:
    """A viewer's token signs in and lists instances; Stop is refused by the API, whose
    one line the page shows (the console does not guess rights: the API decides)."""
    d, base = web
    d.cli("launch", "busybox", "seen", "--network", "none", "--", "sh", "-c", LOOP)
    try:
        page = tab.page
        page.goto(f"{base}/ui/")
        page.fill("#token", token(d, "watcher", "viewer"))
        page.click("form.signin button[type=submit]")
        page.wait_for_selector("#live.on")
        page.wait_for_selector("tr[data-name=seen] .badge[data-state=running]")
        tab.expected.append("status of 403")   # the refused stop (and metrics: admins only)
        page.click("tr[data-name=seen] a")
        page.click(".actions button:text('Stop')")
        page.wait_for_selector("#messages .msg.error")
        shown = page.inner_text("#messages .msg.error").removesuffix("×").strip()
        assert "needs the right 'operate'" in shown and "\n" not in shown, shown
        tab.shot("viewer-refused")
        with d.client() as c:
            assert c.instance("seen")["state"] == "running"
    finally:
        tab.expected.append("status of 401")   # the open page's next reads, once revoked
        d.cli("identity", "revoke", "watcher", check=False)
        d.cli("delete", "seen", "--force")


def test_reports_and_operations_pages(web: tuple[Daemon, str], tab: Page) -> None:
    d, base = web
    reports = d.state_dir / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "lab.html").write_text('<h1>Lab report</h1><p>container/native 1.02x</p>'
                                      '<img src="lab-cpu.png" alt="plot">')
    (reports / "lab-cpu.png").write_bytes(PNG)
    signed_in(d, base, tab, "#/reports")
    tab.page.click("button.link:text('lab.html')")
    frame = tab.page.frame_locator("iframe.report")
    frame.locator("p:text('container/native 1.02x')").wait_for()
    # its plot (beside it, behind the token) is inlined and shown
    img = frame.locator("img")
    assert img.get_attribute("src", timeout=WAIT_MS).startswith("data:image/png;base64,")
    wait_for("the plot drawn", lambda: img.evaluate("i => i.complete && i.naturalWidth") == 1)
    tab.shot("reports")
    tab.page.evaluate("location.hash = '#/operations'")
    tab.page.wait_for_selector("td:text('build image busybox') >> xpath=.. >> .op-success")
    tab.shot("operations")


def test_launch_terminal_graph_stop_delete(web: tuple[Daemon, str], tab: Page) -> None:
    d, base = web
    page = tab.page
    signed_in(d, base, tab, "#/launch")
    page.fill("input[name=name]", "web")
    page.fill("input[name=image]", "busybox")
    page.select_option("select[name=network]", "none")
    page.fill("input[name=memory]", "64MiB")
    page.fill("input[name=command]", SHELL)
    tab.shot("launch-form")
    page.click("form.launch button[type=submit]")
    page.wait_for_url(re.compile(r"#/instances/web$"))
    page.wait_for_selector(".head .badge[data-state=running]")
    tab.shot("overview")
    with d.client() as c:
        assert c.instance("web")["limits"]["memory"] == 64 * 1024 * 1024

    # the list shows it running, with its limits
    page.evaluate("location.hash = '#/instances'")
    row = "tr[data-name=web]"
    page.wait_for_selector(f"{row} .badge[data-state=running]")
    assert "64.0 MiB" in page.inner_text(row)
    page.wait_for_selector(f"{row} td.mem .meter")   # memory and CPU at a glance, from
    page.wait_for_selector(f"{row} td.cpu .meter")   # the metrics (CPU: two scrapes)
    tab.shot("instances")
    # live: a change made elsewhere shows without a reload (the events websocket)
    d.cli("pause", "web")
    page.wait_for_selector(f"{row} .badge[data-state=paused]")
    d.cli("resume", "web")
    page.wait_for_selector(f"{row} .badge[data-state=running]")

    # a real terminal: a tty shell over the exec websocket
    page.click(f"{row} a")
    page.click("button.tab[data-tab=terminal]")
    page.wait_for_selector(".term-status:text('connected')")
    page.wait_for_selector(".xterm-rows")
    wait_for("a shell prompt", lambda: "#" in screen_text(tab))
    page.click(".xterm")
    page.keyboard.type("echo marker-$((6*7)) && hostname")
    page.keyboard.press("Enter")
    wait_for("the command's output", lambda: "marker-42" in screen_text(tab))
    assert "web" in screen_text(tab).split("marker-42", 1)[1]   # the hostname after it
    tab.shot("terminal")

    # a graph gains points (the daemon samples every second)
    page.click("button.tab[data-tab=graphs]")
    cpu = "figure.plot >> nth=0"
    page.wait_for_selector("figure.plot[data-points]:not([data-points='0'])")
    before = int(page.get_attribute(cpu, "data-points") or 0)
    wait_for("new points", lambda: int(page.get_attribute(cpu, "data-points") or 0) >= before + 2)
    tab.shot("graphs")

    # PID 1's output
    page.click("button.tab[data-tab=logs]")
    page.wait_for_selector("pre.logs:text('pid1-up')")

    # stop; a snapshot (named in a dialog) is listed; delete after confirming
    page.click(".actions button:text('Stop')")
    page.wait_for_selector(".head .badge[data-state=stopped]")
    page.click("button.tab[data-tab=snapshots]")
    page.click(".actions button:text('Snapshot')")
    page.fill("dialog[open] input", "before-delete")
    page.click("dialog[open] button.primary")
    page.wait_for_selector("td:text('before-delete')")
    tab.shot("snapshots")
    page.click(".actions button:text('Delete')")
    page.wait_for_selector("dialog.confirm[open]")
    tab.shot("delete-confirm")
    page.click("dialog.confirm button.danger")
    page.wait_for_url(re.compile(r"#/instances$"))
    page.wait_for_selector("p.empty")
    with d.client() as c:
        assert c.instances() == []


def test_bad_launch_shows_the_api_error(web: tuple[Daemon, str], tab: Page) -> None:
    d, base = web
    page = tab.page
    with d.client() as c, pytest.raises(APIError) as api:
        c.create("bad", "busybox", limits={"memory": "12 parsecs"}, networks=[], start=True)
    signed_in(d, base, tab, "#/launch")
    page.fill("input[name=name]", "bad")
    page.select_option("select[name=network]", "none")
    page.fill("input[name=memory]", "12 parsecs")
    tab.expected.append("status of 400")   # the refused POST, which the page shows
    page.click("form.launch button[type=submit]")
    page.wait_for_selector("#launch-error:not([hidden])")
    shown = page.inner_text("#launch-error")
    assert shown == str(api.value) and "\n" not in shown, (shown, str(api.value))
    tab.shot("bad-launch")
    with d.client() as c:
        assert c.instances() == []


@pytest.mark.qemu
def test_vm_serial_console(web: tuple[Daemon, str], tab: Page) -> None:
    """A VM launched from the form with a shell on its serial console, as in
    test_vm_console.py (pc, TCG), typed to through the console tab."""
    d, base = web
    page = tab.page
    signed_in(d, base, tab, "#/launch")
    page.fill("input[name=name]", "cvm")
    page.select_option("select[name=type]", "vm")
    page.select_option("select[name=machine]", "pc")
    page.select_option("select[name=network]", "none")
    page.fill("input[name=memory]", "256MiB")
    page.fill("input[name=command]", "sh -c 'echo console-shell-up; exec sh'")
    try:
        page.click("form.launch button[type=submit]")
        page.wait_for_url(re.compile(r"#/instances/cvm$"), timeout=120_000)
        with d.client() as c:
            assert c.instance("cvm")["options"]["machine"] == "pc"
        wait_for("the VM's shell", lambda: "console-shell-up" in d.cli("logs", "cvm").stdout,
                 timeout=120)
        page.click("button.tab[data-tab=console]")
        page.wait_for_selector(".term-status:text('connected')")
        page.click(".xterm")
        page.keyboard.type("echo vm-$((3*4))")
        page.keyboard.press("Enter")
        wait_for("the VM's answer", lambda: "vm-12" in screen_text(tab), timeout=60)
        tab.shot("vm-console")
    finally:
        tab.page.goto("about:blank")   # its page would read it while it goes away (a 404)
        d.cli("delete", "cvm", "--force", check=False)


def test_without_xterm_the_terminal_says_why(web: tuple[Daemon, str], tab: Page) -> None:
    """As after an install without npm: the daemon reports no xterm.js (here the browser
    is told so), and the terminal tab explains instead of failing."""
    d, base = web
    d.cli("launch", "busybox", "quiet", "--network", "none", "--", "sh", "-c", LOOP)
    try:
        tab.page.route("**/ui/features.json",
                       lambda route: route.fulfill(json={"xterm": False, "projects": False}))
        signed_in(d, base, tab, "#/instances/quiet/terminal")
        tab.page.wait_for_selector(".termbox .msg.warn:text('npm')")
        assert tab.page.locator(".xterm").count() == 0
        tab.shot("no-xterm")
    finally:
        d.cli("delete", "quiet", "--force")


def _get(base: str, path: str, tok: str) -> int:
    """The status of GET /1.0PATH over HTTPS with a bearer token (loopback only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # the console test's own daemon on loopback
    req = urllib.request.Request(f"{base}/1.0{path}", headers={"Authorization": f"Bearer {tok}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_projects_and_identities_pages(web: tuple[Daemon, str], tab: Page) -> None:
    """Create a project (with limits) and an identity from their pages; the token is shown
    once; a non-empty project's deletion is refused with the API's line; the header's
    selector switches the instance list; a viewer is told it lacks the right; revoke."""
    d, base = web
    page = tab.page
    d.cli("launch", "busybox", "in-default", "--network", "none", "--", "sh", "-c", LOOP)
    try:
        signed_in(d, base, tab, "#/projects")
        form = "form.new-project"
        page.fill(f"{form} input[name=name]", "team-ui")
        page.fill(f"{form} input[name=instances]", "2")
        page.fill(f"{form} input[name=memory]", "256MiB")
        page.click(f"{form} button[type=submit]")
        row = "tr[data-name=team-ui]"
        page.wait_for_selector(f"{row} .meter .val:text('0 / 2')")
        page.wait_for_selector("#project option[value=team-ui]", state="attached")
        assert d.cli("project", "info", "team-ui").stdout.count("limits.") == 2
        d.cli("--project", "team-ui", "launch", "busybox", "in-team", "--network", "none",
              "--memory", "64MiB", "--", "sh", "-c", LOOP)
        page.evaluate("location.hash = '#/instances'")
        page.wait_for_selector("tr[data-name=in-default]")
        page.evaluate("location.hash = '#/projects'")
        page.wait_for_selector(f"{row} .meter .val:text('1 / 2')")
        page.wait_for_selector(f"{row} .meter .val:text('64.0 MiB / 256 MiB')")
        tab.shot("projects")
        # deleting a project that holds an instance: confirmed, then refused in one line
        tab.expected.append("status of 409")
        page.click(f"{row} button.danger")
        page.click("dialog.confirm button.danger")
        page.wait_for_selector("#messages .msg.error")
        shown = page.inner_text("#messages .msg.error").removesuffix("×").strip()
        assert "is not empty" in shown and "\n" not in shown, shown
        # the selector scopes the pages: team-ui's instance list
        page.select_option("#project", "team-ui")
        page.evaluate("location.hash = '#/instances'")
        page.wait_for_selector("tr[data-name=in-team]")
        assert page.locator("tr[data-name=in-default]").count() == 0
        tab.shot("instances-in-team-ui")

        # an identity made on the page: its token shown once, with a copy button
        page.evaluate("location.hash = '#/identities'")
        form = "form.new-identity"
        page.fill(f"{form} input[name=name]", "ci-bot")
        page.select_option(f"{form} select[name=role]", "viewer")
        assert page.input_value(f"{form} select[name=project]") == "team-ui"
        page.fill(f"{form} input[name=expires]", "1d")
        page.click(f"{form} button[type=submit]")
        page.wait_for_selector("#new-token code.token")
        secret = page.inner_text("#new-token code.token").strip()
        assert re.fullmatch(r"[\w-]{40,}", secret), secret
        page.wait_for_selector("#new-token button:text('Copy')")
        page.wait_for_selector("tr[data-name=ci-bot] td:text('viewer in team-ui')")
        tab.shot("identity-token")
        assert _get(base, "/instances?project=team-ui", secret) == 200
        assert _get(base, "/instances?project=default", secret) == 404
        page.click("#new-token button:text('Done')")
        assert secret not in page.content()
        page.evaluate("location.hash = '#/projects'")
        page.evaluate("location.hash = '#/identities'")
        page.wait_for_selector("tr[data-name=ci-bot]")
        assert secret not in page.content()   # shown once: never listed again

        # the viewer signs in: it sees only team-ui, and is told it may not see identities
        page.evaluate("sessionStorage.removeItem('cumulo.token'); location.hash = '#/instances';"
                      " location.reload()")
        page.wait_for_selector("#token")
        tab.expected.append("status of 403")   # metrics and identities: admins only
        page.fill("#token", secret)
        page.click("form.signin button[type=submit]")
        page.wait_for_selector("tr[data-name=in-team]")
        page.wait_for_selector("#project option", state="attached")
        options = page.eval_on_selector_all("#project option", "os => os.map(o => o.value)")
        assert options == ["team-ui"], options
        page.evaluate("location.hash = '#/identities'")
        page.wait_for_selector("#denied")
        assert "needs the right 'admin'" in page.inner_text("#denied")
        tab.shot("identities-denied")

        # back as admin: revoke it, after confirming
        signed_in(d, base, tab, "#/identities")
        page.click("tr[data-name=ci-bot] button:text('Revoke')")
        page.wait_for_selector("dialog.confirm[open]")
        page.click("dialog.confirm button.danger")
        page.wait_for_selector("tr[data-name=ci-bot]", state="detached")
        assert "ci-bot" not in d.cli("identity", "list").stdout
        assert _get(base, "/instances?project=team-ui", secret) == 401
    finally:
        page.goto("about:blank")   # not to read the project as it goes away
        d.cli("identity", "revoke", "ci-bot", check=False)
        d.cli("--project", "team-ui", "delete", "in-team", "--force", check=False)
        d.cli("project", "delete", "team-ui", check=False)
        d.cli("delete", "in-default", "--force")
