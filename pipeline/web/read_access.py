"""Who may read the dashboard, the builds API and /metrics (issue 10, finding 7). With
LAYERING_READ_TOKEN set, `ReadGuard` stands in front of the FastAPI app and lets a request
through only with `Authorization: Bearer <token>` or the cookie that the login form (`/login`)
sets; everything else gets a one-line 401 (JSON, or the login form for a browser). Health checks
and the webhook (it has its own HMAC) are never asked for the token. Paths are guarded unless
listed as open, so a route added later is guarded by default.

The cookie holds an HMAC of the token, not the token: HttpOnly, SameSite=Strict, Path=/, Secure
when the service is reached over https. Tokens are compared in constant time and never logged;
a token is never accepted in a URL (URLs end up in logs, history and Referer headers). Does no
I/O beyond the request it answers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.core.settings import Settings
from pipeline.web import api, dashboard, receiver

COOKIE = "layering_read"
LOGIN_PATH = "/login"
OPEN_PATHS = frozenset({"/healthz", "/readyz", *receiver.WEBHOOK_PATHS})
LOGIN_BODY_LIMIT = 4096
COOKIE_MAX_AGE_SECONDS = 12 * 3600
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="layering"'}
# where the login may send the browser afterwards: a path on this site, nothing that a browser
# reads as another host (`//host`, `/\host`) and nothing that could break the header
_LOCAL_PATH = re.compile(
    r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/-]*(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?"
)


def cookie_value(token: str) -> str:
    """What the login cookie holds: derived from the token (a new token voids every cookie)."""
    return hmac.new(token.encode(), b"layering read cookie v1", hashlib.sha256).hexdigest()


def local_path(candidate: str) -> str:
    """`candidate` when it is a plain path on this site, else `/`."""
    return candidate if _LOCAL_PATH.fullmatch(candidate) else "/"


def guard(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app` behind the read token when LAYERING_READ_TOKEN is set, else `app` itself."""
    if settings.read_token is None:
        return app
    return ReadGuard(
        app,
        token=settings.read_token.get_secret_value(),
        secure_cookie=settings.public_url.startswith("https://"),
    )


def _same(given: str, expected: str) -> bool:
    """Constant-time equality; hashing first hides the length of the expected value too."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
        hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest(),
    )


class ReadGuard:
    def __init__(self, app: ASGIApp, *, token: str, secure_cookie: bool) -> None:
        self.app = app
        self._token = token
        self._cookie = cookie_value(token)
        self._secure_cookie = secure_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if scope["path"] == LOGIN_PATH:
            response = await self._login(request)
        elif self._admits(request):
            await self.app(scope, receive, send)
            return
        else:
            response = self._refusal(request)
        await response(scope, receive, send)

    def _admits(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(credentials, self._token):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and _same(cookie, self._cookie)

    def _refusal(self, request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            query = request.url.query
            wanted = request.url.path + (f"?{query}" if query else "")
            return _login_page(
                "This page needs the read token (LAYERING_READ_TOKEN).",
                next_path=local_path(wanted),
                status=401,
            )
        return api.json_response(
            401,
            {
                "error": "missing or wrong read token: send Authorization: Bearer "
                "<LAYERING_READ_TOKEN>, or sign in at /login"
            },
            CHALLENGE,
        )

    async def _login(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            next_path = local_path(request.query_params.get("next", "/"))
            return _login_page("Enter the read token (LAYERING_READ_TOKEN).", next_path=next_path)
        if request.method != "POST":
            return api.json_response(
                405, {"error": "/login takes GET or POST"}, {"Allow": "GET, POST"}
            )
        body = await _body(request, LOGIN_BODY_LIMIT)
        if body is None:
            return api.json_response(
                413, {"error": f"login form larger than {LOGIN_BODY_LIMIT} bytes"}
            )
        try:
            fields = parse_qs(
                body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=4
            )
        except ValueError:
            return api.json_response(
                400, {"error": "login form: expected the fields token and next"}
            )
        next_path = local_path(fields.get("next", ["/"])[0])
        if not _same(fields.get("token", [""])[0], self._token):
            return _login_page(
                "wrong token: ask whoever runs the service for LAYERING_READ_TOKEN.",
                next_path=next_path,
                status=401,
                problem=True,
            )
        secure = "; Secure" if self._secure_cookie or request.url.scheme == "https" else ""
        cookie = (
            f"{COOKIE}={self._cookie}; HttpOnly; SameSite=Strict; Path=/; "
            f"Max-Age={COOKIE_MAX_AGE_SECONDS}{secure}"
        )
        return Response(
            status_code=303,
            headers={"Location": next_path, "Set-Cookie": cookie, "Cache-Control": "no-store"},
        )


def _login_page(
    message: str, *, next_path: str, status: int = 200, problem: bool = False
) -> Response:
    return dashboard.html_response(
        dashboard.render("login.html.j2", message=message, next=next_path, problem=problem),
        status=status,
        form_action="'self'",
        headers=CHALLENGE if status == 401 else None,
    )


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
