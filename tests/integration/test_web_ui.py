"""The web UI in a real browser: Debian's chromium driven by Playwright (never `playwright
install`), against a real node (engine, agent, libvirtd, QEMU under TCG in a lab host).

Logs in (a wrong password and a POST without its CSRF token are refused), finds the host on
the dashboard, watches a VM turn ``running`` in an open VM list when the CLI starts it (no
reload) and another's start appear in the task panel, draws its live graphs (uPlot, from
the stats endpoint), stops it from its page
through the confirmation naming it, and checks that a user
of project pa sees nothing of other projects. Every main page is checked with axe-core (from
npm, node_modules) and photographed at desktop and phone width into docs/screenshots/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodeutil import REPO, Node, wait_for
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from storageutil import traversable

from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 60_000  # a bound for the browser's waits (the CPU is shared with TCG guests)
# expect()'s own default is 5 s, apart from the context's: a TCG guest on a busy 2-CPU
# machine took longer than that to echo a typed line (CI, stop 28).
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def site(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Users ``webadmin`` (admin) and ``alice`` (user of project pa only), with passwords;
    VMs ``web`` (default), ``mine`` (pa) and ``secret`` (pb), stopped. All removed at the
    end, even after a failure."""
    if not Path(CHROMIUM).exists() or not AXE.exists():
        pytest.fail("the web UI tests need Debian's chromium and node_modules "
                    "(`make deps node_modules`)")
    pw = tmp_path_factory.mktemp("web") / "pw"
    pw.write_text(PASSWORD + "\n")
    traversable(node)
    made: list[tuple[str, str]] = []
    try:
        node.cli("project", "create", "pa")
        node.cli("project", "create", "pb")
        node.cli("image", "share", "tiny")
        node.cli("user", "create", "webadmin", "--role", "admin", "--password-file", str(pw))
        node.cli("user", "create", "alice", "--role", "none", "--password-file", str(pw))
        node.cli("role", "assign", "alice", "user", "--project", "pa")
        for project, vm in (("default", "web"), ("pa", "mine"), ("pb", "secret")):
            node.cli("--project", project, "vm", "create", vm, "--image", "tiny",
                     "--memory", "128M")
            made.append((project, vm))
        hosts: Any = node.cli_json("host", "list")
        yield {"host": hosts[0]["name"]}
    finally:
        for project, vm in made:
            node.cli("--project", project, "vm", "delete", vm, "--force", check=False)
        for user in ("webadmin", "alice"):
            node.cli("user", "delete", user, check=False)
        for project in ("pa", "pb"):
            node.cli("project", "delete", project, check=False)
        node.cli("image", "share", "tiny", "--off", check=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _context(browser: Browser, phone: bool = False) -> BrowserContext:
    # the engine's own CA is not the browser's; axe is injected past the page's CSP
    ctx = browser.new_context(ignore_https_errors=True, bypass_csp=True,
                              viewport=PHONE if phone else DESKTOP)
    ctx.set_default_timeout(WAIT_MS)
    return ctx


def _log_in(page: Page, url: str, user: str, password: str = PASSWORD) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture(scope="module")
def admin(browser: Browser, node: Node, site: dict[str, str]) -> Iterator[Page]:
    """A desktop browser logged in as webadmin."""
    ctx = _context(browser)
    page = ctx.new_page()
    _log_in(page, node.url, "webadmin")
    expect(page).to_have_url(f"{node.url}/")
    try:
        yield page
    finally:
        ctx.close()


def _shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _axe(page: Page) -> list[str]:
    """The serious and critical accessibility violations axe-core finds on the page."""
    page.add_script_tag(path=str(AXE))
    found: Any = page.evaluate("async () => (await axe.run()).violations"
                               ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))")
    return [json.dumps(v) for v in found if v["impact"] in ("serious", "critical")]


def test_a_wrong_password_is_refused(browser: Browser, node: Node, site: dict[str, str]) -> None:
    ctx = _context(browser)
    try:
        page = ctx.new_page()
        _log_in(page, node.url, "webadmin", "not the password")
        expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
        expect(page).to_have_url(f"{node.url}/login")
        assert not [c for c in ctx.cookies() if c["name"] == "corral_session"]
        assert _axe(page) == []
        _shoot(page, "login-desktop")
    finally:
        ctx.close()


def test_a_post_without_the_csrf_token_is_refused(admin: Page, node: Node) -> None:
    # the page's own cookies go with it (a forged form elsewhere would not even have them)
    answer = admin.request.post(f"{node.url}/vms/web/power", form={"action": "start"})
    assert answer.status == 403 and "Request refused" in answer.text()
    no_token = admin.request.post(f"{node.url}/logout", form={})
    assert no_token.status == 403
    admin.goto(f"{node.url}/vms/web")
    expect(admin.locator(".vm-summary .badge")).to_have_text("stopped")  # nothing started


def test_the_dashboard_shows_the_host(admin: Page, node: Node, site: dict[str, str]) -> None:
    admin.goto(f"{node.url}/")
    hosts = admin.get_by_role("region", name="Hosts")
    expect(hosts).to_contain_text(site["host"])
    expect(hosts.locator(".badge").first).to_have_text("up")
    assert _axe(admin) == []
    _shoot(admin, "dashboard-desktop")


def test_a_vm_started_from_the_cli_turns_running_without_a_reload(
        admin: Page, node: Node) -> None:
    admin.goto(f"{node.url}/vms")
    row = admin.locator('tr[data-live-vm="web"]')
    expect(row.locator(".badge")).to_have_text("stopped")
    admin.evaluate("window.stillTheSamePage = true")  # a reload would drop it
    admin.wait_for_function("window.htmx !== undefined")
    node.cli("vm", "start", "web")
    expect(row.locator(".badge")).to_have_text("running")
    assert admin.evaluate("window.stillTheSamePage === true")
    expect(row.get_by_role("button", name="Stop web")).to_be_visible()
    assert _axe(admin) == []
    _shoot(admin, "vms-desktop")


def test_the_task_panel_shows_an_action_started_from_the_cli(admin: Page, node: Node) -> None:
    """The panel at the bottom (collapsed until opened; then it stays open) streams what
    happens, newest first, without a reload: an operation with its outcome, the VM's new
    state."""
    admin.goto(f"{node.url}/")
    panel = admin.locator("#tasks")
    expect(panel).to_have_attribute("data-ready", "yes")
    expect(panel).not_to_have_attribute("open", "")
    panel.locator("summary").click()
    expect(panel).to_have_attribute("open", "")
    tasks = panel.get_by_role("list", name="Tasks and events, newest first")
    expect(tasks).to_have_attribute("aria-live", "polite")
    admin.evaluate("window.stillTheSamePage = true")  # a reload would drop it
    try:
        node.cli("--project", "pa", "vm", "start", "mine")
        started = tasks.locator("li.task", has_text="vm.start pa.mine")
        expect(started.locator(".badge")).to_have_text("success")
        running = tasks.locator("li.task", has_text="VM pa.mine").filter(has_text="running")
        expect(running.first).to_be_visible()
        order = tasks.locator("li.task .task-what").all_inner_texts()
        assert order.index("VM pa.mine") < order.index("vm.start pa.mine"), order  # newest first
        assert len(order) <= 50
        assert admin.evaluate("window.stillTheSamePage === true")
        assert _axe(admin) == []
        _shoot(admin, "tasks-desktop")
    finally:
        node.cli("--project", "pa", "vm", "stop", "mine", "--force", check=False)
    expect(tasks.locator("li.task", has_text="vm.stop pa.mine").locator(".badge")
           ).to_have_text("success")
    panel.locator("summary").click()  # closed again: the other pages' screenshots without it
    expect(panel).not_to_have_attribute("open", "")


# pixels of a graph's canvas drawn in its first series' colour (#2155c9), opaque: the line
_LINE_PIXELS = """(canvas) => {
  const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 200 && Math.abs(d[i] - 33) < 40 && Math.abs(d[i + 1] - 85) < 40
        && Math.abs(d[i + 2] - 201) < 40) n++;
  }
  return n;
}"""


def test_a_running_vms_graphs_draw(admin: Page, node: Node, site: dict[str, str]) -> None:
    """The VM page's live graphs (uPlot) fill from the stats endpoint while web runs; the
    host's page graphs the host."""
    admin.goto(f"{node.url}/vms/web")
    graphs = admin.get_by_role("region", name="Usage")
    expect(graphs).to_have_attribute("data-drawn", "yes", timeout=WAIT_MS)  # first rates: ~10 s
    for name in ("cpu", "memory", "disk", "net"):
        expect(graphs.locator(f'[data-graph="{name}"] canvas')).to_be_visible()
    # a line drawn, not an empty frame (the first sample is a dot: wait for the next ones)
    admin.wait_for_function(f"() => ({_LINE_PIXELS})(document.querySelector("
                            "'[data-graph=\"cpu\"] canvas')) > 20", timeout=WAIT_MS)
    expect(graphs.locator('[data-graph="cpu"] [data-now]')).to_contain_text("%")
    stats: Any = node.cli_json("vm", "stats", "web")
    assert stats["host"] and stats["series"]["cpu_percent"]["points"], stats
    assert _axe(admin) == []
    _shoot(admin, "vm-graphs-desktop")
    admin.goto(f"{node.url}/hosts/{site['host']}")
    expect(admin.get_by_role("region", name="Usage")).to_have_attribute("data-drawn", "yes")
    _shoot(admin, "host-graphs-desktop")


def test_stop_asks_for_a_confirmation_naming_the_vm(admin: Page, node: Node) -> None:
    wait_for("web to boot (its acpid takes the power button)",
             lambda: BOOT_MARKER in node.console_log("web"), timeout=180)
    admin.goto(f"{node.url}/vms/web")
    summary = admin.locator("#vm-summary")
    expect(summary.locator(".badge")).to_have_text("running")
    dialog = admin.get_by_role("dialog")
    summary.get_by_role("button", name="Stop web").click()
    expect(dialog).to_contain_text("Stop VM web?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(summary.locator(".badge")).to_have_text("running")  # cancelled: still running
    summary.get_by_role("button", name="Stop web").click()
    expect(dialog).to_be_visible()
    _shoot(admin, "vm-confirm-desktop")
    dialog.get_by_role("button", name="Stop", exact=True).click()
    expect(admin.locator("#activity")).to_contain_text("vm.stop")  # the operation's progress
    expect(admin.locator("#vm-summary .badge")).to_have_text("stopped")
    expect(admin.get_by_role("region", name="Recent operations")).to_contain_text("vm.stop")
    assert _axe(admin) == []
    _shoot(admin, "vm-desktop")


def test_a_project_user_sees_none_of_another_projects_vms(
        browser: Browser, node: Node, site: dict[str, str]) -> None:
    ctx = _context(browser)
    try:
        page = ctx.new_page()
        _log_in(page, node.url, "alice")
        expect(page).to_have_url(f"{node.url}/")
        page.goto(f"{node.url}/vms")
        table = page.locator("table.vm-table")
        expect(table).to_contain_text("mine")
        names = page.locator("a.vm-name").all_inner_texts()
        assert names == ["mine"]
        for other in ("pb.secret", "web"):
            answer = page.goto(f"{node.url}/vms/{other}")
            assert answer is not None and answer.status == 404, other
        page.goto(f"{node.url}/vms")
        csrf = page.locator('input[name="csrf"]').first.get_attribute("value") or ""
        refused = page.request.post(f"{node.url}/vms/pb.secret/power", form={"action": "start"},
                                    headers={"X-CSRF-Token": csrf})
        assert refused.status == 404  # as if there were none
        assert node.cli_json("--project", "pb", "vm", "show", "secret")["state"] == "stopped"  # type: ignore[index]
    finally:
        ctx.close()


def test_pages_at_phone_width(browser: Browser, node: Node, site: dict[str, str]) -> None:
    ctx = _context(browser, phone=True)
    try:
        page = ctx.new_page()
        page.goto(f"{node.url}/login")
        _shoot(page, "login-phone")
        _log_in(page, node.url, "webadmin")
        expect(page).to_have_url(f"{node.url}/")
        _shoot(page, "dashboard-phone")
        tasks = page.locator("#tasks")  # the task panel: collapsed at phone width, opens
        expect(tasks).to_have_attribute("data-ready", "yes")  # tasks.js has set it up
        expect(tasks).not_to_have_attribute("open", "")
        tasks.locator("summary").click()
        expect(tasks.get_by_role("list", name="Tasks and events, newest first")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shoot(page, "tasks-phone")
        page.goto(f"{node.url}/vms")
        web = page.locator('tr[data-live-vm="web"]')
        expect(web).to_be_visible()
        box = web.bounding_box()
        assert box is not None and box["width"] <= PHONE["width"]  # no sideways scrolling
        expect(web.get_by_role("link", name="web")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert _axe(page) == []
        _shoot(page, "vms-phone")
        page.goto(f"{node.url}/vms/web")
        _shoot(page, "vm-phone")
    finally:
        ctx.close()


# -- consoles (xterm.js and noVNC; engine/ui/consoles.py) ------------------------------------

@pytest.fixture(scope="module")
def console_vm(node: Node, site: dict[str, str]) -> Iterator[str]:
    """VM ``term`` (default project), stopped: the consoles' own, whatever the other tests
    do to theirs. Deleted at the end, even after a failure."""
    node.cli("vm", "create", "term", "--image", "tiny", "--memory", "128M")
    try:
        yield "term"
    finally:
        node.cli("vm", "delete", "term", "--force", check=False)


def test_the_serial_console_follows_a_start_and_runs_a_command(
        admin: Page, node: Node, console_vm: str) -> None:
    admin.goto(f"{node.url}/vms/{console_vm}")
    admin.get_by_role("link", name="Serial").click()
    expect(admin).to_have_url(f"{node.url}/vms/{console_vm}/console")
    status = admin.locator("#console-status")
    expect(status).to_contain_text("retrying")  # stopped: no console yet, the page waits
    node.cli("vm", "start", console_vm)  # the page reconnects by itself and sees the boot
    screen = admin.locator("#terminal .xterm-rows")
    expect(screen).to_contain_text(BOOT_MARKER, timeout=180_000)
    expect(status).to_have_text("Connected")
    expect(admin.locator("#console-vm-state .badge")).to_have_text("running")  # live, too
    expect(screen).to_contain_text("root@tiny:~#")  # the shell's prompt, as a person waits
    admin.locator("#terminal").click()
    admin.keyboard.type("echo console-$((6 * 7))")
    admin.keyboard.press("Enter")
    expect(screen).to_contain_text("console-42")  # the guest's shell ran it
    assert _axe(admin) == []
    _shoot(admin, "console-desktop")


def test_the_graphical_console_draws_the_guests_screen(
        admin: Page, node: Node, console_vm: str) -> None:
    wait_for(f"{console_vm} to run", lambda: BOOT_MARKER in node.console_log(console_vm),
             timeout=180)
    admin.goto(f"{node.url}/vms/{console_vm}/display")
    expect(admin.locator("#console-status")).to_have_text("Connected")
    expect(admin.get_by_role("button", name="Send Ctrl+Alt+Del")).to_be_enabled()
    # the canvas noVNC paints the guest's VGA screen on holds more than one colour
    admin.wait_for_function("""() => {
        const c = document.querySelector('#screen canvas');
        if (!c || c.width < 100 || c.height < 100) return false;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 4; i < d.length; i += 4)
            if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
        return false;
    }""")
    assert _axe(admin) == []
    _shoot(admin, "display-desktop")
    # the VM stopped and started again: the page reconnects by itself, without a reload
    admin.evaluate("window.stillTheSamePage = true")
    node.cli("vm", "stop", console_vm, "--force")
    expect(admin.locator("#console-status")).to_contain_text("retrying")
    node.cli("vm", "start", console_vm)
    expect(admin.locator("#console-status")).to_have_text("Connected")
    assert admin.evaluate("window.stillTheSamePage === true")


def test_consoles_at_phone_width_and_no_ticket_for_another_project(
        browser: Browser, node: Node, console_vm: str) -> None:
    ctx = _context(browser, phone=True)
    try:
        page = ctx.new_page()
        _log_in(page, node.url, "alice")
        expect(page).to_have_url(f"{node.url}/")
        page.goto(f"{node.url}/vms/pa.mine/console")
        expect(page.locator("#terminal .xterm-screen")).to_be_visible()
        # mine is stopped: the page says so and keeps trying, rather than "Connected"
        expect(page.locator("#console-status")).to_contain_text("retrying")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shoot(page, "console-phone")
        csrf = page.locator('input[name="csrf"]').first.get_attribute("value") or ""
        for other in ("pb.secret", console_vm):  # another project's, and the default one's
            refused = page.request.post(f"{node.url}/vms/{other}/console-ticket",
                                        form={"kind": "vnc"}, headers={"X-CSRF-Token": csrf})
            assert refused.status == 404, other
            answer = page.goto(f"{node.url}/vms/{other}/display")
            assert answer is not None and answer.status == 404, other
        own = page.request.post(f"{node.url}/vms/pa.mine/console-ticket",
                                form={"kind": "vnc"}, headers={"X-CSRF-Token": csrf})
        assert own.status == 200 and own.json()["url"].startswith("/api/v1/vms/mine/vnc-websocket")
    finally:
        ctx.close()


# -- the user portal: create form, quota, snapshots, delete (engine/ui/portal.py) -----------

@pytest.fixture(scope="module")
def portal_vm(node: Node, site: dict[str, str]) -> Iterator[str]:
    """The name of the VM the create form makes (default project); deleted at the end,
    even after a failure."""
    try:
        yield "formvm"
    finally:
        node.cli("vm", "delete", "formvm", "--force", check=False)


def test_a_vm_created_through_the_form_reaches_running_without_a_reload(
        admin: Page, node: Node, portal_vm: str) -> None:
    admin.goto(f"{node.url}/vms")
    admin.get_by_role("link", name="New VM").click()
    expect(admin).to_have_url(f"{node.url}/vms/new")
    admin.get_by_label("Name", exact=True).fill(portal_vm)
    admin.get_by_label("Image or template", exact=True).select_option("tiny")
    admin.get_by_label("Memory", exact=True).fill("128M")
    admin.get_by_label("Cloud-init user", exact=True).fill("ops")
    expect(admin.get_by_label("Start it once created", exact=True)).to_be_checked()
    assert _axe(admin) == []
    _shoot(admin, "vm-new-desktop")
    admin.get_by_role("button", name="Create VM").click()
    expect(admin).to_have_url(f"{node.url}/vms/{portal_vm}")
    admin.evaluate("window.stillTheSamePage = true")  # a reload would drop it
    summary = admin.locator("#vm-summary")
    expect(admin.get_by_role("region", name="Recent operations")).to_contain_text("vm.create")
    expect(summary.locator(".badge")).to_have_text("running", timeout=120_000)
    assert admin.evaluate("window.stillTheSamePage === true")
    shown: Any = node.cli_json("vm", "show", portal_vm)
    assert shown["memory_mib"] == 128 and shown["image"] == "tiny"


def test_the_form_refuses_what_passes_the_quota(
        browser: Browser, node: Node, site: dict[str, str]) -> None:
    node.cli("project", "quota", "set", "pa", "--memory", "256M")  # mine has 128M of it
    ctx = _context(browser)
    try:
        page = ctx.new_page()
        _log_in(page, node.url, "alice")
        expect(page).to_have_url(f"{node.url}/")
        page.goto(f"{node.url}/vms/new")
        expect(page.get_by_role("region", name="Quota of project pa")).to_contain_text(
            "128 MiB of 256 MiB")
        page.get_by_label("Name", exact=True).fill("toobig")
        page.get_by_label("Image or template", exact=True).select_option("tiny")
        page.get_by_label("Memory", exact=True).fill("512M")
        expect(page.locator("#quota-warn")).to_contain_text("memory")  # early, in the page
        page.get_by_role("button", name="Create VM").click()
        error = page.locator("#err-memory")
        expect(error).to_contain_text("quota of 256 MiB")
        expect(page.get_by_label("Memory", exact=True)).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("Name", exact=True)).to_have_value("toobig")  # what was typed stays
        assert _axe(page) == []
        _shoot(page, "vm-new-quota-desktop")
        vms: Any = node.cli_json("--project", "pa", "vm", "list")
        assert [v["name"] for v in vms] == ["mine"]
    finally:
        ctx.close()
        node.cli("project", "quota", "set", "pa", "--memory", "none", check=False)


def _confirm(page: Page, question: str, button: str) -> None:
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(question)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_be_hidden()


def test_snapshots_taken_and_reverted_then_stop_and_delete(
        admin: Page, node: Node, portal_vm: str) -> None:
    admin.goto(f"{node.url}/vms/{portal_vm}")
    summary = admin.locator("#vm-summary")
    summary.get_by_role("button", name=f"Force off {portal_vm}").click()
    _confirm(admin, f"Force off VM {portal_vm}?", "Force off")
    expect(summary.locator(".badge")).to_have_text("stopped")
    snaps = admin.get_by_role("region", name="Snapshots")
    for name in ("first", "second"):
        snaps.get_by_label("New snapshot", exact=True).fill(name)
        snaps.get_by_role("button", name="Take snapshot").click()
        expect(snaps.locator(f'tr[data-snapshot="{name}"]')).to_be_visible()
    second = snaps.locator('tr[data-snapshot="second"]')
    expect(second).to_contain_text("child of first")  # the tree: second under first
    expect(second).to_contain_text("current")
    snaps.get_by_role("button", name=f"Revert {portal_vm} to first").click()
    _confirm(admin, f"Revert VM {portal_vm} to snapshot first?", "Revert")
    expect(admin.locator("#activity")).to_contain_text("vm.snapshot.revert")
    expect(snaps.locator('tr[data-snapshot="first"]')).to_contain_text("current")
    listed: Any = node.cli_json("vm", "snapshot", "list", portal_vm)
    assert {s["name"]: s["current"] for s in listed} == {"first": True, "second": False}
    assert _axe(admin) == []
    _shoot(admin, "vm-snapshots-desktop")
    summary.get_by_role("button", name=f"Delete {portal_vm}").click()
    _confirm(admin, f"Delete VM {portal_vm}?", "Delete")
    expect(admin).to_have_url(f"{node.url}/vms")
    expect(admin.locator(f'tr[data-live-vm="{portal_vm}"]')).to_have_count(0)

    def gone() -> bool:
        listed: Any = node.cli_json("vm", "list")
        return portal_vm not in [v["name"] for v in listed]
    wait_for(f"{portal_vm} deleted", gone, timeout=60)


def test_admin_pages_in_the_browser(admin: Page, browser: Browser, node: Node,
                                    site: dict[str, str]) -> None:
    for path, name in (("/hosts", "hosts"), (f"/hosts/{site['host']}", "host"),
                       ("/networks", "networks"), ("/security-groups", "security-groups"),
                       ("/pools", "pools"), ("/images", "images"),
                       ("/projects", "projects"), ("/projects/pa", "project"),
                       ("/users", "users"), ("/roles", "roles"),
                       ("/audit?action=login", "audit")):
        admin.goto(f"{node.url}{path}")
        expect(admin.locator("h1")).to_be_visible()
        assert _axe(admin) == [], path
        _shoot(admin, f"{name}-desktop")
    expect(admin.get_by_role("region", name="Records")).to_contain_text("webadmin")
    ctx = _context(browser, phone=True)
    try:
        page = ctx.new_page()
        _log_in(page, node.url, "webadmin")
        expect(page).to_have_url(f"{node.url}/")
        for path, name in (("/vms/new", "vm-new"), (f"/hosts/{site['host']}", "host")):
            page.goto(f"{node.url}{path}")
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            _shoot(page, f"{name}-phone")
    finally:
        ctx.close()


def test_a_security_group_made_given_a_rule_and_deleted_through_the_admin_forms(
        admin: Page, node: Node) -> None:
    """The admin pages' own forms (their refusals are unit-tested): what the browser made is
    what the CLI then shows."""
    group = "webui-sg"
    try:
        admin.goto(f"{node.url}/security-groups")
        admin.locator("#sg-name").fill(group)
        admin.locator("#sg-project").select_option("default")
        admin.get_by_role("button", name="Create group").click()
        expect(admin).to_have_url(f"{node.url}/security-groups/{group}")
        admin.locator("#rule-port").fill("2222")
        admin.locator("#rule-cidr").fill("10.9.0.0/16")
        admin.get_by_role("button", name="Add rule").click()
        rules = admin.locator("#sg-rules")
        expect(rules).to_contain_text("2222")
        shown: Any = node.cli_json("sg", "show", group)
        assert any(r.get("port_min") == 2222 and r.get("cidr") == "10.9.0.0/16"
                   for r in shown["rules"]), shown
        assert _axe(admin) == []
        _shoot(admin, "security-group-desktop")
        admin.get_by_role("button", name="Delete", exact=True).click()
        _confirm(admin, f"Delete security group {group}?", "Delete")
        expect(admin).to_have_url(f"{node.url}/security-groups")
        listed: Any = node.cli_json("sg", "list")
        assert group not in [g["name"] for g in listed]
    finally:
        node.cli("sg", "delete", group, check=False)
