"""The web UI in a real browser: Debian's headless Chromium driven by Playwright.

A reviewer signs in with an operator token, finds an agent's pending request in the inbox, and
approves it narrower, denies it, or watches it expire; the agent's long-poll on the management
API sees the outcome. Also: the requester cannot approve its own request, markup in a purpose
is shown as text, and a form posted from another origin or without the CSRF token is refused.

Screenshots of the inbox and of a request's page are written to $CUSTOS_UI_SCREENSHOTS when it
is set (docs/screenshots/ holds the ones the README shows).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from custos import Custos, b64url_decode, unique

CHROMIUM = os.environ.get("CUSTOS_CHROMIUM", "/usr/bin/chromium")
# What this machine's Chromium needs to start quietly in a sandbox without a network: no
# background connections, no first-run work (see the tool library's notes on Chromium).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    # A script that runs or a dialog that opens is a failure of escaping: record both.
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def reviewer(custos: Custos, name: str = "reviewer") -> str:
    """A reviewer of the team that owns every NHI of this run; returns its token."""
    created = custos._admin(
        "POST",
        "/v1/operators",
        {"name": unique(name), "roles": ["reviewer"], "teams": [custos.team]},
        201,
    )
    return created["token"]


def sign_in(page: Page, base_url: str, token: str, then: str = "/ui/approvals") -> None:
    page.goto(f"{base_url}{then}")
    # Not signed in: the sign-in form, which comes back here afterwards.
    expect(page).to_have_url(f"{base_url}/ui/login?next={then.replace('/', '%2F')}")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}{then}")


def ask(base_url: str, key: str, scope: list[str], purpose: str = "monthly report") -> dict:
    response = httpx.post(
        f"{base_url}/v1/tasks",
        headers={"authorization": f"Bearer {key}"},
        json={"purpose": purpose, "scope": scope, "ttl_seconds": 600},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()


def long_poll(base_url: str, key: str, task_id: str) -> concurrent.futures.Future:
    """The agent waiting on its task, as an agent would: a long-poll started before the
    reviewer looks."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def wait() -> tuple[dict, float]:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            response = httpx.get(
                f"{base_url}/v1/tasks/{task_id}?wait=30",
                headers={"authorization": f"Bearer {key}"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            task = response.json()
            if task["state"] != "pending_approval":
                return task, time.monotonic()
        raise AssertionError("the task was never decided")

    future = pool.submit(wait)
    pool.shutdown(wait=False)
    return future


def approval(custos: Custos, approval_id: str) -> dict:
    return custos._admin("GET", f"/v1/approvals/{approval_id}")


def jwt_claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("CUSTOS_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_a_reviewer_approves_narrower_and_the_agent_gets_exactly_that(custos: Custos, page: Page):
    agent = custos.nhi("ui-agent", ["crm:read:orders/*"])
    asked = ask(
        custos.base_url,
        agent.secret,
        ["crm:read:orders/*", "crm:export:customers/emea", "crm:write:customers/emea"],
        purpose="export EMEA customers for the quarterly churn report",
    )
    waiting = long_poll(custos.base_url, agent.secret, asked["id"])
    approval_id = asked["approval_id"]

    # Two more requests waiting, so that the inbox shows its order: riskiest first.
    other = custos.nhi("ui-cleanup-agent", ["crm:read:orders/*"])
    risky = ask(custos.base_url, other.secret, ["crm:delete:customers/*"], purpose="purge churned customers")
    sign_in(page, custos.base_url, reviewer(custos))
    row = page.locator(f"#request-{approval_id}")
    first = page.locator("tr.row").first
    expect(first).to_have_id(f"request-{risky['approval_id']}")
    expect(first.locator(".risk")).to_have_text("high")
    expect(row).to_be_visible()
    expect(row).to_contain_text(agent.name)
    expect(row).to_contain_text("crm:export:customers/emea crm:write:customers/emea")
    screenshot(page, "inbox.png")

    # Keyboard: select the request's row and open it.
    rows = page.locator("tr.row")
    index = next(i for i in range(rows.count()) if rows.nth(i).get_attribute("id") == f"request-{approval_id}")
    for _ in range(index + 1):
        page.keyboard.press("j")
    expect(row).to_have_class("row selected")
    page.keyboard.press("o")
    expect(page).to_have_url(f"{custos.base_url}/ui/approvals/{approval_id}")

    # The context: the diff against the ceiling, the purpose, the owner.
    diff = page.locator("#scope-diff")
    expect(diff.locator("tr.beyond")).to_have_count(2)
    expect(diff.locator("tr.within")).to_contain_text("crm:read:orders/*")
    expect(page.locator("#purpose")).to_have_text("export EMEA customers for the quarterly churn report")
    screenshot(page, "approval.png")

    # Narrower: without the write grant, and a shorter lifetime.
    page.keyboard.press("n")
    expect(page.locator("#approve-scope")).to_be_focused()
    page.fill("#approve-scope", "crm:read:orders/*\ncrm:export:customers/emea\n")
    page.fill("#approve-ttl", "300")
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    expect(page.locator("#approve-reason")).to_be_focused()
    page.keyboard.type("export only; no writes to customer records")
    page.click("#approve-button")
    expect(page.locator("#state")).to_have_text("approved")
    expect(page.locator("#done")).to_have_text("Request approved.")

    task, _ = waiting.result(timeout=60)
    assert task["state"] == "active", task
    assert sorted(task["scope"]) == ["crm:export:customers/emea", "crm:read:orders/*"]
    claims = jwt_claims(task["credential"]["access_token"])
    assert sorted(claims["scope"].split()) == ["crm:export:customers/emea", "crm:read:orders/*"]
    assert claims["exp"] - claims["iat"] <= 300

    decided = approval(custos, approval_id)
    assert decided["state"] == "approved"
    assert decided["reason"] == "export only; no writes to customer records"
    assert decided["decided_by"].startswith("operator:")
    assert page.dialogs == []


def test_a_reviewer_denies_and_the_agent_hears_it(custos: Custos, page: Page):
    agent = custos.nhi("ui-denied", ["crm:read:orders/*"])
    asked = ask(custos.base_url, agent.secret, ["crm:export:customers/emea"])
    waiting = long_poll(custos.base_url, agent.secret, asked["id"])
    sign_in(page, custos.base_url, reviewer(custos), f"/ui/approvals/{asked['approval_id']}")
    page.fill("#deny-reason", "no exports this quarter")
    page.click("#deny-button")
    expect(page.locator("#state")).to_have_text("denied")
    expect(page.locator("#decision")).to_contain_text("no exports this quarter")
    task, _ = waiting.result(timeout=60)
    assert task["state"] == "denied"
    assert "credential" not in task or task["credential"] is None


def test_the_requester_cannot_approve_its_own_request(custos: Custos, page: Page):
    agent = custos.nhi("ui-self", ["crm:read:orders/*"])
    token = reviewer(custos, "asker")
    # A reviewer asks on the agent's behalf, then tries to approve what it asked for.
    response = httpx.post(
        f"{custos.base_url}/v1/tasks",
        headers={"authorization": f"Bearer {token}"},
        json={"purpose": "backfill", "scope": ["crm:export:customers/emea"], "nhi_id": agent.id},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    approval_id = response.json()["approval_id"]
    sign_in(page, custos.base_url, token, f"/ui/approvals/{approval_id}")
    page.fill("#approve-reason", "looks fine to me")
    page.click("#approve-button")
    expect(page.locator("#error-code")).to_have_text("own_request")
    assert approval(custos, approval_id)["state"] == "pending"

    # And an NHI's own key never signs in to the UI at all.
    page.context.clear_cookies()
    page.goto(f"{custos.base_url}/ui/login")
    page.fill("#token", agent.secret)
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("only operators sign in here")
    expect(page).to_have_url(f"{custos.base_url}/ui/login")


def test_markup_in_a_purpose_is_shown_as_text(custos: Custos, page: Page):
    agent = custos.nhi("ui-markup", ["crm:read:orders/*"])
    purpose = '<img src=x onerror="alert(1)"><script>alert(2)</script><b>bold</b>'
    asked = ask(custos.base_url, agent.secret, ["crm:export:customers/emea"], purpose=purpose)
    sign_in(page, custos.base_url, reviewer(custos))
    row = page.locator(f"#request-{asked['approval_id']}")
    expect(row.locator("td.purpose")).to_have_text(purpose)
    row.locator("a.open").click()
    expect(page.locator("#purpose")).to_have_text(purpose)
    # Nothing of it became an element, and no script ran.
    assert page.locator("#purpose img, #purpose script, #purpose b").count() == 0
    assert page.locator("td.purpose img, td.purpose script").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []


def test_a_form_from_elsewhere_or_without_the_csrf_token_is_refused(custos: Custos, page: Page):
    agent = custos.nhi("ui-csrf", ["crm:read:orders/*"])
    asked = ask(custos.base_url, agent.secret, ["crm:export:customers/emea"])
    approval_id = asked["approval_id"]
    target = f"{custos.base_url}/ui/approvals/{approval_id}/approve"
    sign_in(page, custos.base_url, reviewer(custos))

    def attack_from(origin: str) -> str:
        """A page at `origin` that posts the approve form to Custos on load, as a malicious
        site would; returns the code of the page Custos answered with."""
        html = (
            f'<form id="f" method="post" action="{target}">'
            '<input name="reason" value="sure"><input name="scope" value="crm:export:customers/emea">'
            "</form><script>document.getElementById('f').submit()</script>"
        )
        page.route(f"{origin}/attack", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        page.goto(f"{origin}/attack")
        page.wait_for_url(target)
        return page.locator("#error-code").inner_text()

    # Another site: SameSite=Strict keeps the session cookie at home, so it is not signed in.
    assert attack_from("http://attacker.example") == "not_signed_in"
    # The same site on another port: the cookie goes along, the browser says where the form
    # came from, and that is refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other_port = s.getsockname()[1]
    assert attack_from(f"http://127.0.0.1:{other_port}") == "csrf_failed"
    # A request with the session cookie but without the form's token.
    forged = page.context.request.post(
        target,
        form={"reason": "sure", "scope": "crm:export:customers/emea"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "csrf_failed" in forged.text()
    # And with a wrong one.
    forged = page.context.request.post(
        target,
        form={"csrf": secrets.token_urlsafe(32), "reason": "sure", "scope": "crm:export:customers/emea"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert approval(custos, approval_id)["state"] == "pending"


def test_signing_out_ends_the_session(custos: Custos, page: Page):
    sign_in(page, custos.base_url, reviewer(custos))
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["custos_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui"
    page.click("text=Sign out")
    expect(page).to_have_url(f"{custos.base_url}/ui/login")
    # The old cookie, replayed, signs nobody in: the session ended on the server.
    replay = httpx.get(
        f"{custos.base_url}/ui/approvals",
        cookies={"custos_session": session["value"]},
        follow_redirects=False,
    )
    assert replay.status_code == 303
    assert replay.headers["location"].startswith("/ui/login")


def test_the_inventory_lists_nhis_and_shows_one(custos: Custos, page: Page):
    agent = custos.nhi("ui-inventory", ["crm:read:orders/*"])
    ask(custos.base_url, agent.secret, ["crm:export:customers/emea"], purpose="inventory check")
    sign_in(page, custos.base_url, reviewer(custos), "/ui/nhis")
    page.fill("#filter-q", agent.name)
    page.keyboard.press("Enter")
    expect(page.locator("table.inventory tbody tr")).to_have_count(1)
    page.click(f"text={agent.name}")
    expect(page.locator("h1")).to_contain_text(agent.name)
    expect(page.locator("#status")).to_have_text("active")
    expect(page.locator("main")).to_contain_text("inventory check")
    # A reviewer of the owner team may suspend it; it is then refused everywhere.
    page.fill("#suspend-reason", "investigating")
    page.click("#suspend-form button")
    expect(page.locator("#status")).to_have_text("suspended")
    assert custos._admin("GET", f"/v1/nhis/{agent.id}")["status"] == "suspended"


def test_a_finding_is_found_read_and_dismissed(custos: Custos, page: Page):
    # An orphan makes a finding: its team's one member is revoked, and the jobs run.
    name = unique("ui-vanishing")
    team = custos._admin("POST", "/v1/teams", {"name": name, "contact": f"{name}@example.com"}, 201)
    member = custos._admin(
        "POST", "/v1/operators", {"name": unique("vera"), "roles": ["reviewer"], "teams": [team["id"]]}, 201
    )
    agent = unique("ui-orphan")
    custos._admin(
        "POST",
        "/v1/nhis",
        {
            "name": agent, "kind": "ai_agent", "platform": "custom", "environment": "staging",
            "owner": {"team": team["id"]}, "purpose": "left behind", "scope_ceiling": [],
        },
        201,
    )
    custos._admin("POST", f"/v1/operators/{member['id']}/revoke")
    # The scheduler may hold the job lock for a moment: 409 job_busy then, and again.
    for _ in range(50):
        response = custos.admin.post("/v1/lifecycle/run")
        if response.status_code != 409:
            break
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    admin_token = custos.admin.headers["authorization"].split(" ", 1)[1]
    sign_in(page, custos.base_url, admin_token, "/ui/findings")
    page.fill("#filter-kind", "orphaned")
    page.keyboard.press("Enter")
    # The unfiltered list holds the row too: wait for the filtered one before clicking, or
    # the click lands on a page the filter's answer is about to replace.
    expect(page).to_have_url(f"{custos.base_url}/ui/findings?state=unresolved&kind=orphaned")
    row = page.locator("table.findings tbody tr", has_text=agent)
    expect(row).to_have_count(1)
    row.locator("a.open").click()
    expect(page.locator("h1")).to_contain_text("orphaned")
    expect(page.locator("#summary")).to_contain_text(agent)
    expect(page.locator("#evidence")).to_contain_text(team["id"])
    page.fill("#dismiss-reason", "the team was merged into platform")
    page.click("#dismiss-form button")
    expect(page.locator("#state")).to_have_text("dismissed")
    expect(page.locator("main")).to_contain_text("the team was merged into platform")
    found = custos._admin("GET", "/v1/findings?kind=orphaned&state=dismissed")
    assert any(f["summary"].startswith(agent) for f in found["items"]), found


# ---- expiry, on a server of its own with a deadline of a few seconds ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def short_deadline() -> Custos:
    binary = os.environ.get("CUSTOS_INTEROP_BIN")
    if not binary:
        pytest.fail("CUSTOS_INTEROP_BIN is not set: run the suite through scripts/interop.sh")
    work = tempfile.TemporaryDirectory()
    config = Path(work.name) / "custos.toml"
    config.write_text("approval_ttl_seconds = 4\n")
    port = free_port()
    token = f"ui-admin-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")}
    env.update({"CUSTOS_ADMIN_TOKEN": token, "CUSTOS_LOG_LEVEL": "warn"})
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{work.name}/data", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    custos = Custos(base, token)
    yield custos
    custos.close()
    server.terminate()
    server.wait(timeout=10)
    work.cleanup()


def test_an_unanswered_request_expires_and_the_agent_is_denied(short_deadline: Custos, page: Page):
    custos = short_deadline
    agent = custos.nhi("ui-expiry", ["crm:read:orders/*"])
    asked = ask(custos.base_url, agent.secret, ["crm:export:customers/emea"])
    waiting = long_poll(custos.base_url, agent.secret, asked["id"])
    sign_in(page, custos.base_url, reviewer(custos), f"/ui/approvals/{asked['approval_id']}")
    expect(page.locator("#state")).to_have_text("pending")
    # The reviewer starts on the form, but the deadline passes first.
    page.fill("#approve-reason", "too late")
    task, _ = waiting.result(timeout=30)
    assert task["state"] == "denied"
    page.click("#approve-button")
    expect(page.locator("#error-code")).to_have_text("approval_not_pending")
    expect(page.locator("#state")).to_have_text("expired")
    expect(page.locator("#approve-form")).to_have_count(0)
    assert approval(custos, asked["approval_id"])["state"] == "expired"
    # The inbox lists it among the expired ones, not the pending.
    page.goto(f"{custos.base_url}/ui/approvals?state=expired")
    expect(page.locator(f"#request-{asked['approval_id']}")).to_be_visible()
    page.goto(f"{custos.base_url}/ui/approvals")
    expect(page.locator(f"#request-{asked['approval_id']}")).to_have_count(0)
