"""The web UI in a real browser: Debian's chromium driven by Playwright (never `playwright
install`), against a real node (engine, agent, libvirtd, QEMU under TCG in a lab host).

Logs in (a wrong password and a POST without its CSRF token are refused), finds the host on
the dashboard, watches a VM turn ``running`` in an open VM list when the CLI starts it (no
reload), stops it from its page through the confirmation naming it, and checks that a user
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
