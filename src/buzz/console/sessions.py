"""Console sessions: who signed in, kept in a signed, expiring cookie and nowhere else.

A cookie is `v1.<payload>.<signature>`: the payload is JSON in base64url, the signature an
HMAC-SHA256 of `v1.<payload>` with the secret every buzz process on the database shares
(`Store.console_secret`). A cookie whose signature does not match, whose payload does not decode,
or whose expiry has passed is no session at all. The payload carries the session's CSRF token:
the cookie is HttpOnly, so a page can only know it from a form buzz rendered.

The signature proves buzz issued the cookie; whether the session may still act is checked on
every request (`Console._session`): a project's console token must still be live, and an
operator's session names, by a keyed fingerprint, the operator token it was opened with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

COOKIE = "buzz_console"
# The sign-in form's own CSRF token, before there is a session to carry one.
SIGN_IN_COOKIE = "buzz_console_sign_in"
SIGN_IN_LIFETIME = 12 * 3600
_VERSION = "v1"
_MAX_COOKIE = 2048  # anything longer was not made here


class _Payload(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    kind: Literal["operator", "project", "sign-in"]
    csrf: str
    expires: int  # unix seconds
    project: str | None = None
    token_id: str | None = None
    operator: str | None = None  # the operator token's fingerprint


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user: the operator (`project` None) or a member of one project."""

    project: str | None
    token_id: str | None
    csrf: str
    expires: int
    label: str = ""  # who, for people: the token's name; filled in once the token is checked

    @property
    def operator(self) -> bool:
        return self.project is None

    @property
    def who(self) -> str:
        """For the log: who made a change, by public id only."""
        return "the operator" if self.project is None else f"console token {self.token_id}"

    def sees(self, project: str) -> bool:
        """Whether this session may see and change `project`'s keys and tokens."""
        return self.project is None or self.project == project


class Signer:
    def __init__(self, secret: bytes, clock: Callable[[], float]) -> None:
        self._secret = secret
        self._clock = clock  # wall clock: expiry is a moment, the same at every process

    def operator_fingerprint(self, admin_token: str) -> str:
        """Names the operator token without revealing it: an operator session opened with one
        token is refused once the gateway runs with another."""
        return hmac.new(self._secret, b"operator\0" + admin_token.encode(), hashlib.sha256).hexdigest()[:32]

    def operator(self, admin_token: str, lifetime: int) -> str:
        return self._sign(self._payload("operator", lifetime, operator=self.operator_fingerprint(admin_token)))

    def member(self, project: str, token_id: str, lifetime: int) -> str:
        return self._sign(self._payload("project", lifetime, project=project, token_id=token_id))

    def sign_in_form(self) -> tuple[str, str]:
        """A cookie for the sign-in form and the CSRF token the form must carry back."""
        payload = self._payload("sign-in", SIGN_IN_LIFETIME)
        return self._sign(payload), payload.csrf

    def sign_in_csrf(self, cookie: str | None) -> str | None:
        payload = self._read(cookie)
        return payload.csrf if payload is not None and payload.kind == "sign-in" else None

    def session(self, cookie: str | None, admin_token: str | None) -> Session | None:
        """The session a cookie carries, if buzz signed it, it has not expired, and (for the
        operator) the operator token is still the one it was opened with."""
        payload = self._read(cookie)
        if payload is None:
            return None
        if payload.kind == "operator":
            if not admin_token or payload.operator is None:
                return None
            if not hmac.compare_digest(payload.operator, self.operator_fingerprint(admin_token)):
                return None
            return Session(None, None, payload.csrf, payload.expires, "operator")
        if payload.kind == "project" and payload.project and payload.token_id:
            return Session(payload.project, payload.token_id, payload.csrf, payload.expires)
        return None

    def _payload(self, kind: Literal["operator", "project", "sign-in"], lifetime: int, **fields: str) -> _Payload:
        expires = int(self._clock()) + lifetime
        return _Payload(kind, secrets.token_urlsafe(32), expires, **fields)

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._secret, signed, hashlib.sha256).digest()

    def _sign(self, payload: _Payload) -> str:
        body = _b64(msgspec.json.encode(payload))
        signed = f"{_VERSION}.{body}"
        return f"{signed}.{_b64(self._mac(signed.encode()))}"

    def _read(self, cookie: str | None) -> _Payload | None:
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        signed, _, signature = cookie.rpartition(".")
        version, _, body = signed.partition(".")
        if version != _VERSION or not body:
            return None
        try:
            given = _unb64(signature)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._mac(signed.encode())):
            return None
        try:
            payload = msgspec.json.decode(_unb64(body), type=_Payload)
        except (ValueError, msgspec.DecodeError):
            return None
        return payload if payload.expires > self._clock() else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
