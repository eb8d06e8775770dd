"""Login: one password for the app, sessions in a signed cookie, HTTP basic for integrations.

The password comes from the app's settings (an environment variable or a Prefect Secret block,
read at start) and is only ever compared, in constant time. A session is a cookie holding its
expiry and a random id, signed with HMAC-SHA256 under a key made at start: it needs no server
state, and every session ends when the app restarts. Logging out revokes the session's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from urllib.parse import parse_qs, urlencode

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "nvrflow_review"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 4096  # a login form is a password and a link back


def password_matches(given: str, expected: SecretStr) -> bool:
    """Constant time whatever the lengths: the digests are compared, not the texts."""
    want = hashlib.sha256(expected.get_secret_value().encode()).digest()
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), want)


class Sessions:
    """Signed session cookies: `<expiry>.<id>.<signature>`."""

    def __init__(self, lifetime_s: int = SESSION_SECONDS, key: bytes | None = None):
        self.lifetime_s = lifetime_s
        self._key = key or secrets.token_bytes(32)
        self._revoked: dict[str, int] = {}  # session id -> its expiry

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self) -> str:
        payload = f"{int(time.time()) + self.lifetime_s}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    def _parts(self, value: str) -> tuple[int, str] | None:
        expiry, _, rest = value.partition(".")
        session_id, _, signature = rest.partition(".")
        if not hmac.compare_digest(self._sign(f"{expiry}.{session_id}"), signature):
            return None
        try:
            return int(expiry), session_id
        except ValueError:
            return None

    def valid(self, value: str | None) -> bool:
        parts = self._parts(value) if value and len(value) < 200 else None
        return parts is not None and parts[0] > time.time() and parts[1] not in self._revoked

    def revoke(self, value: str | None) -> None:
        parts = self._parts(value) if value and len(value) < 200 else None
        if parts is None:
            return
        now = time.time()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}  # forget the expired
        self._revoked[parts[1]] = parts[0]


def basic_password(headers: Headers) -> str | None:
    """The password of an `Authorization: Basic` header (the user name is not checked)."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 1024:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


class FormTooLarge(ValueError):
    pass


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """A url-encoded form body of at most `limit` bytes (FormTooLarge past it), read as it streams."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormTooLarge()
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def safe_next(value: str | None) -> str:
    """Where to go after login: a path of this app only (never `//host` or another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2000:
        return "/"
    return value


class RequireLogin:
    """ASGI middleware: every path but the login page and static files needs a session or basic auth.

    Without one, the JSON API answers 401 (with a basic challenge) and pages send the browser to
    the login page, with the page asked for to come back to.
    """

    def __init__(self, app: ASGIApp, sessions: Sessions, password: SecretStr):
        self.app = app
        self.sessions = sessions
        self.password = password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/api/"):
            body, status = b'{"error": "login required"}', 401
            headers = [(b"content-type", b"application/json"), (b"www-authenticate", b'Basic realm="nvrflow"')]
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            location = "/login?" + urlencode({"next": target})
            body, status = b"", 303
            headers = [(b"location", location.encode("latin-1"))]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def allowed(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path == "/login" or path == "/healthz" or path.startswith("/static/"):
            return True
        if self.sessions.valid(Request(scope).cookies.get(COOKIE)):
            return True
        given = basic_password(Headers(scope=scope))
        return given is not None and password_matches(given, self.password)
