"""Server side of HTTP Digest authentication (RFC 7616, qop=auth) as Hikvision devices do it."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
NONCE_LIFETIME_S = 600
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))')


def parse_authorization(header: str) -> dict[str, str] | None:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    return {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(rest)
    }


class DigestAuthority:
    """Issues nonces and checks Authorization headers for one recorder account."""

    def __init__(self, realm: str, algorithm: str) -> None:
        if algorithm not in _HASHES:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.realm = realm
        self.algorithm = algorithm
        self._secret = secrets.token_bytes(16)

    def _h(self, text: str) -> str:
        return _HASHES[self.algorithm](text.encode()).hexdigest()

    def new_nonce(self) -> str:
        stamp = f"{int(time.time()):x}"
        sig = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp}{sig}"

    def _nonce_ok(self, nonce: str) -> bool:
        stamp, sig = nonce[:-24], nonce[-24:]
        expected = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        if not stamp or not hmac.compare_digest(sig, expected):
            return False
        try:
            return time.time() - int(stamp, 16) < NONCE_LIFETIME_S
        except ValueError:
            return False

    def challenge(self) -> str:
        return (
            f'Digest qop="auth", realm="{self.realm}", nonce="{self.new_nonce()}", '
            f'stale="FALSE", algorithm={self.algorithm}'
        )

    def verify(self, header: str | None, method: str, username: str, password: str) -> bool:
        if not header:
            return False
        params = parse_authorization(header)
        if not params:
            return False
        required = ("username", "realm", "nonce", "uri", "response")
        if any(k not in params for k in required):
            return False
        if params["username"] != username or params["realm"] != self.realm:
            return False
        if params.get("algorithm", "MD5").upper() != self.algorithm:
            return False
        if not self._nonce_ok(params["nonce"]):
            return False
        ha1 = self._h(f"{username}:{self.realm}:{password}")
        ha2 = self._h(f"{method}:{params['uri']}")
        if params.get("qop"):
            if params["qop"] != "auth" or "nc" not in params or "cnonce" not in params:
                return False
            expected = self._h(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
        else:
            expected = self._h(f"{ha1}:{params['nonce']}:{ha2}")
        return hmac.compare_digest(expected, params["response"].lower())
