"""`tradeops serve`: the console in a browser, through textual-serve, behind a login.

textual-serve's aiohttp app starts one console process per websocket. This wraps it:

- nothing but the login page answers without a session: the page, its static files and the
  websocket all need one (a page is sent to /login, anything else gets 401);
- a login checks the operator's password against its scrypt hash (console/web/users.py); after 5
  failures from an address in 5 minutes, that address waits;
- a session is a random token in an HttpOnly, SameSite=Strict cookie (Secure behind https), kept
  only in the server's memory, for 12 hours or until logout;
- on loopback it answers only to loopback names (a DNS-rebinding page is refused);
- CSRF: the login and logout forms carry a token that must match a cookie (login) or the session
  (logout), and every POST and the websocket upgrade must come from the page's own origin (the
  Origin header, when the browser sends one, names this host): another site can neither log a
  browser in nor open a console with its cookie;
- the page may not be framed (CSP frame-ancestors 'none'), so keystrokes cannot be stolen by a
  page on top;
- each console process gets its operator from the session, never from the browser: the login's
  name and signing key (TRADEOPS_OPERATOR, TRADEOPS_SIGNING_KEY) in its environment and the
  login's read-only flag on its command line, so what it changes is signed by that operator's key.
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.download_manager import DownloadManager

from console.web.users import User, Users

log = logging.getLogger("tradeops.serve")

COOKIE = "tradeops_session"
LOGIN_COOKIE = "tradeops_login"
SESSION_S = 12 * 3600
FAILURES = 5  # failed logins from one address within FAILURE_WINDOW_S before it must wait
FAILURE_WINDOW_S = 300.0
PUBLIC = {"/login", "/favicon.ico"}


@dataclass
class Session:
    user: User
    csrf: str
    expires: float
    consoles: set[AppService] = field(default_factory=set)


class OperatorAppService(AppService):
    """One console process, started with its operator's identity in the environment."""

    def __init__(self, command: str, env: dict[str, str], **kw: Any) -> None:
        super().__init__(command, **kw)
        self.identity_env = env

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(width=width, height=height)
        env.update(self.identity_env)
        return env


Spawn = Callable[[User], tuple[str, dict[str, str]]]
"""A login -> the console's shell command and the environment that names its operator."""


class ConsoleServer:
    def __init__(
        self,
        users: Users,
        spawn: Spawn,
        *,
        title: str = "tradeops",
        secure: bool = False,
        max_consoles: int = 8,
        say: Callable[[str], None] = print,
        hosts: set[str] | None = None,
    ) -> None:
        self.users = users
        self.spawn = spawn
        self.title = title
        self.secure = secure
        self.max_consoles = max_consoles
        self.hosts = hosts
        """The names a browser may reach this server by (None: any): on loopback, only loopback
        names, so a page that rebinds its own name to 127.0.0.1 (DNS rebinding) is refused."""
        self.say = say
        self.sessions: dict[str, Session] = {}
        self.failures: dict[str, deque[float]] = {}
        self.consoles: set[AppService] = set()
        self.download_manager = DownloadManager()
        import textual_serve

        base = Path(textual_serve.__file__).parent
        self.statics_path = base / "static"
        self.templates_path = base / "templates"

    # -- the aiohttp app ---------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path))
        app.add_routes(
            [
                web.get("/login", self.login_page),
                web.post("/login", self.login),
                web.get("/logout", self.logout_page),
                web.post("/logout", self.logout),
                web.get("/", self.index, name="index"),
                web.get("/ws", self.websocket, name="websocket"),
                web.static("/static", self.statics_path, name="static"),
            ]
        )
        app.on_shutdown.append(self.on_shutdown)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        if self.hosts is not None and urlsplit(f"//{request.host}").hostname not in self.hosts:
            raise web.HTTPForbidden(text=f"refused: this server is not {request.host}")
        if (request.method not in ("GET", "HEAD") or request.path == "/ws") and not self.same_origin(request):
            raise web.HTTPForbidden(text="refused: this request did not come from the console's own page")
        if request.path not in PUBLIC:
            session = self.session_of(request)
            if session is None:
                if request.path == "/" and request.method == "GET":
                    raise web.HTTPFound("/login")
                raise web.HTTPUnauthorized(text="log in first: /login")
            request["session"] = session
        response = await handler(request)
        if not response.prepared:
            response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make the Origin "null"
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        """A browser names the page that sent a POST or opened a websocket (Origin): it must be
        this server. Clients that send no Origin (curl, scripts) are not browsers riding a cookie."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        return urlsplit(origin).netloc == request.host

    def session_of(self, request: web.Request) -> Session | None:
        self.users.refresh()  # a login removed while serving ends its sessions now
        token = request.cookies.get(COOKIE, "")
        session = self.sessions.get(token)
        if session is None:
            return None
        if session.expires < time.time() or session.user.name not in self.users.users:
            del self.sessions[token]
            return None
        return session

    # -- login -------------------------------------------------------------------------------------
    async def login_page(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        token = secrets.token_urlsafe(24)
        page = LOGIN_PAGE.substitute(
            title=html.escape(self.title),
            csrf=token,
            error=f'<p class="error">{html.escape(error)}</p>' if error else "",
        )
        response = web.Response(text=page, content_type="text/html", status=status)
        response.set_cookie(
            LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=self.secure, max_age=900, path="/login"
        )
        return response

    def _throttled(self, addr: str) -> float:
        """Seconds `addr` must wait before another try (0: it may try)."""
        now = time.monotonic()
        tries = self.failures.setdefault(addr, deque(maxlen=FAILURES))
        while tries and tries[0] < now - FAILURE_WINDOW_S:
            tries.popleft()
        if len(tries) >= FAILURES:
            return tries[0] + FAILURE_WINDOW_S - now
        return 0.0

    async def login(self, request: web.Request) -> web.Response:
        addr = request.remote or "?"
        wait = self._throttled(addr)
        if wait > 0:
            return await self.login_page(
                request, f"too many failed logins from {addr}: try again in {wait:.0f} s", status=429
            )
        form = await request.post()
        self.users.refresh()
        token = str(form.get("csrf", ""))
        if not token or not secrets.compare_digest(token, request.cookies.get(LOGIN_COOKIE, "")):
            return await self.login_page(request, "the login form expired: try again", status=403)
        name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
        user = await asyncio.get_running_loop().run_in_executor(None, self.users.check, name, password)
        if user is None:
            self.failures[addr].append(time.monotonic())
            self.say(f"failed login as {name!r} from {addr}")
            return await self.login_page(request, "wrong name or password", status=401)
        self.failures.pop(addr, None)
        session_token = secrets.token_urlsafe(32)
        self.sessions[session_token] = Session(user, secrets.token_urlsafe(24), time.time() + SESSION_S)
        self.say(f"{user.name} logged in from {addr}")
        response = web.HTTPFound("/")
        response.set_cookie(
            COOKIE, session_token, httponly=True, samesite="Strict", secure=self.secure, max_age=SESSION_S, path="/"
        )
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout_page(self, request: web.Request) -> web.Response:
        session: Session = request["session"]
        page = LOGOUT_PAGE.substitute(
            title=html.escape(self.title), name=html.escape(session.user.name), csrf=session.csrf
        )
        return web.Response(text=page, content_type="text/html")

    async def logout(self, request: web.Request) -> web.Response:
        session: Session = request["session"]
        form = await request.post()
        if not secrets.compare_digest(str(form.get("csrf", "")), session.csrf):
            raise web.HTTPForbidden(text="refused: the logout form did not come from this session")
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        for console in list(session.consoles):
            await console.stop()
        self.say(f"{session.user.name} logged out")
        response = web.HTTPFound("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- the console -------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        session: Session = request["session"]
        scheme = "wss" if request.secure or self.secure else "ws"
        context = {
            "font_size": _int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": f"{scheme}://{request.host}/ws",
            "config": {"static": {"url": "/static/"}},
            "application": {"name": f"{self.title}: {session.user.name}"},
        }
        return aiohttp_jinja2.render_template("app_index.html", request, context)

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        session: Session = request["session"]
        if len(self.consoles) >= self.max_consoles:
            raise web.HTTPServiceUnavailable(text=f"{len(self.consoles)} consoles open: the most this server runs")
        command, env = self.spawn(session.user)
        ws = web.WebSocketResponse(heartbeat=15)
        width = _int(request.query.get("width", "80"), 80)
        height = _int(request.query.get("height", "24"), 24)
        console: OperatorAppService | None = None
        try:
            await ws.prepare(request)
            console = OperatorAppService(
                command,
                env,
                write_bytes=ws.send_bytes,
                write_str=ws.send_str,
                close=ws.close,
                download_manager=self.download_manager,
            )
            self.consoles.add(console)
            session.consoles.add(console)
            await console.start(width, height)
            self.say(f"console opened for {session.user.name} ({len(self.consoles)} open)")
            await _relay(ws, console)
        except asyncio.CancelledError:
            await ws.close()
        except Exception:
            log.exception("console for %s failed", session.user.name)
        finally:
            if console is not None:
                await console.stop()
                self.consoles.discard(console)
                session.consoles.discard(console)
                self.say(f"console closed for {session.user.name}")
        return ws

    async def on_shutdown(self, app: web.Application) -> None:
        for console in list(self.consoles):
            await console.stop()


async def _relay(ws: web.WebSocketResponse, console: AppService) -> None:
    """The browser's keys, resizes and focus to the console process (textual-serve's protocol)."""
    from aiohttp import WSMsgType

    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        try:
            kind, data = message.json()
        except (ValueError, TypeError):
            continue
        if kind == "stdin":
            await console.send_bytes(str(data).encode("utf-8"))
        elif kind == "resize" and isinstance(data, dict):
            await console.set_terminal_size(_int(data.get("width"), 80), _int(data.get("height"), 24))
        elif kind == "ping":
            await ws.send_json(["pong", data])
        elif kind == "blur":
            await console.blur()
        elif kind == "focus":
            await console.focus()


def _int(value: object, default: int) -> int:
    try:
        return max(1, min(int(str(value)), 1000))
    except ValueError:
        return default


_STYLE = """<style>
body { background: #0c181f; color: #e0e6ea; font-family: menlo, monospace; display: flex;
       align-items: center; justify-content: center; height: 100vh; margin: 0; }
form { background: #12232d; padding: 2em 3em; min-width: 20em; }
h1 { font-size: 1.2em; } label { display: block; margin-top: 1em; }
input { width: 100%; padding: .4em; margin-top: .3em; background: #0c181f; color: #e0e6ea; border: 1px solid #456; }
button { margin-top: 1.5em; padding: .5em 2em; background: #5e0ba7; color: white; border: none; }
.error { color: #ff8080; }
</style>"""

LOGIN_PAGE = Template(
    """<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}: log in</title>"""
    + _STYLE
    + """</head><body><form method="post" action="/login">
<h1>${title}: log in</h1>${error}
<input type="hidden" name="csrf" value="${csrf}">
<label>operator <input name="name" id="name" autocomplete="username" autofocus required></label>
<label>password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login">log in</button>
</form></body></html>"""
)

LOGOUT_PAGE = Template(
    """<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}: log out</title>"""
    + _STYLE
    + """</head><body><form method="post" action="/logout">
<h1>${title}: logged in as ${name}</h1>
<input type="hidden" name="csrf" value="${csrf}">
<button type="submit" id="logout">log out</button>
</form></body></html>"""
)
