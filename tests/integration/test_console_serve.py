"""`tradeops serve` in a real headless Chromium: nothing answers without a login, an operator logs
in, the console opens in the page, switches screens on keys, and an approval made in the browser
is signed by that operator's key. The screenshot is kept in the test's tmp dir.

Needs Debian's `chromium` and the playwright package (its own browser download is not used); the
test is skipped with the reason without them (`.ci/run` installs chromium when it can)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from backend.bus import embedded
from gates import decisions, model
from tests.conftest import TRADEOPS, await_for, wait_for
from tests.keys import Keys

ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
PASSWORD = "correct horse battery staple"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium): the browser test needs it")
    pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    return path


@pytest.fixture
def served(tmp_path: Path, tradeops_env: dict[str, str], r: redis.Redis, team: Keys) -> Iterator[str]:
    """`tradeops serve` on a free loopback port, with one login (ann, signing with her key)."""
    env = dict(tradeops_env)
    add = subprocess.run(
        [*TRADEOPS, "serve", "add-user", "ann", "--key", str(team.path("ann")), "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    assert f"signs with {team('ann').fingerprint}" in add.stdout and "password (shown once)" not in add.stdout
    port = embedded.free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*TRADEOPS, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)

    def listening() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, timeout=30, what="tradeops serve listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_nothing_answers_without_a_login(served: str, tradeops_env: dict[str, str]) -> None:
    with httpx.Client(base_url=served) as c:
        rebound = c.get("/login", headers={"Host": f"evil.example:{served.rsplit(':', 1)[1]}"})
        assert rebound.status_code == 403  # a page that rebinds its name to 127.0.0.1
        page = c.get("/")
        assert page.status_code == 302 and page.headers["location"] == "/login"
        for path in ("/ws", "/static/js/textual.js", "/logout"):
            assert c.get(path).status_code == 401, path
        login = c.get("/login")
        assert login.status_code == 200 and "HttpOnly" in login.headers["set-cookie"]
        assert login.headers["x-frame-options"] == "DENY"
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        # a form posted without its cookie's token (another site's form) is refused
        bad = httpx.post(f"{served}/login", data={"csrf": "forged", "name": "ann", "password": PASSWORD})
        assert bad.status_code == 403 and "set-cookie" not in {k.lower() for k in bad.headers if "session" in k}
        # ... and so is one from another origin, even with the token
        other = c.post(
            "/login",
            data={"csrf": csrf.group(1), "name": "ann", "password": PASSWORD},
            headers={"Origin": "http://evil.example"},
        )
        assert other.status_code == 403
        wrong = c.post("/login", data={"csrf": csrf.group(1), "name": "ann", "password": "not her password"})
        assert wrong.status_code == 401 and "wrong name or password" in wrong.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text)  # each form has a token of its own
        assert csrf
        good = c.post("/login", data={"csrf": csrf.group(1), "name": "ann", "password": PASSWORD})
        assert good.status_code == 302 and good.headers["location"] == "/"
        cookie = good.headers["set-cookie"]
        assert "tradeops_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert c.get("/").status_code == 200
        # a websocket opened by another site's page with the browser's cookie is refused
        ws = c.get("/ws", headers={"Origin": "http://evil.example", "Connection": "Upgrade", "Upgrade": "websocket"})
        assert ws.status_code == 403
        # a login removed while serving ends its session at the next request
        gone = subprocess.run(
            [*TRADEOPS, "serve", "remove-user", "ann"], capture_output=True, text=True, env=tradeops_env, timeout=60
        )
        assert gone.returncode == 0, gone.stderr
        after = c.get("/")
        assert after.status_code == 302 and after.headers["location"] == "/login"
        # guessing: after 5 failures from an address, it waits
        codes = []
        for _ in range(6):
            form = c.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token
            codes.append(c.post("/login", data={"csrf": token.group(1), "name": "ann", "password": "guess" * 3}))
        assert [x.status_code for x in codes] == [401] * 5 + [429]
        assert "too many failed logins from 127.0.0.1" in codes[-1].text


async def test_an_operator_logs_in_switches_screens_and_approves_a_gate_signed_by_her_key(
    served: str, r: redis.Redis, team: Keys, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    chromium = _chromium()
    seen = bytearray()

    def text(since: int = 0) -> str:
        """What the browser was sent (from byte `since`), escape sequences taken out."""
        return ANSI.sub(b"", bytes(seen[since:])).decode("utf-8", "replace")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("websocket", lambda ws: ws.on("framereceived", lambda f: seen.extend(_bytes(f))))
            await page.goto(served)
            assert page.url.endswith("/login")  # refused without a login
            await page.fill("#name", "ann")
            await page.fill("#password", "wrong password!!")
            await page.click("#login")
            assert "wrong name or password" in await page.content()
            await page.fill("#name", "ann")
            await page.fill("#password", PASSWORD)
            await page.click("#login")
            await page.wait_for_url(f"{served}/")
            await await_for(lambda: "operator ann" in text(), timeout=60, what="the console, signed in as ann")
            await page.click("#terminal")
            await page.keyboard.press("6")
            await await_for(lambda: "phase1" in text(), timeout=60, what="the gates screen")
            mark = len(seen)
            await page.keyboard.press("a")
            await await_for(lambda: "Approve gate phase1" in text(mark), timeout=60, what="the approval modal")
            # each field is typed into once the console has drawn the last one's echo
            await page.keyboard.type("reviewed in the browser")
            await await_for(lambda: "reviewed in the browser" in text(mark), timeout=60, what="the reason typed")
            await page.keyboard.press("Enter")
            mark = len(seen)
            await page.keyboard.type("phase1")
            await await_for(lambda: "phase1" in text(mark), timeout=60, what="the confirmation typed")
            await page.keyboard.press("Enter")

            gates = model.load()

            def approved() -> list[str]:
                return [a.fingerprint for a in decisions.states(r, gates)["phase1"].approvals]

            signed = await await_for(approved, timeout=60, what="ann's approval of phase1 on ops.gates")
            assert signed == [team("ann").fingerprint]  # her key signed it, not the server's
            [approval] = decisions.states(r, gates)["phase1"].approvals
            assert approval.operator == "ann" and approval.reason == "reviewed in the browser"
            await await_for(lambda: "approved" in text(mark), timeout=60, what="the approval's notification")
            shot = tmp_path / "console-in-chromium.png"
            await page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("TRADEOPS_KEEP_SCREENSHOT"):  # to look at it
                shutil.copy(shot, os.environ["TRADEOPS_KEEP_SCREENSHOT"])
        finally:
            await browser.close()


def _bytes(frame: str | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()
