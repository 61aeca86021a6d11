"""Which headers cross buzz, each way. Everything end to end does, except a short deny-list."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from buzz.identifiers import identifier_or_none
from buzz.proxy.auth import ANY_KEY

# Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the message.
# `expect` is handled by the server that received it; forwarding it would make the upstream
# client wait for a 100 Continue that buzz does not need.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"expect",
    }
)

# No credential of the client's travels on, whatever vendor it was meant for: buzz adds only its
# own. `host` and `content-length` are set by the HTTP client for the upstream connection and body.
CREDENTIAL_HEADERS = frozenset(
    {b"x-api-key", b"authorization", b"x-goog-api-key", b"api-key", b"proxy-authorization", b"cookie"}
)
_REQUEST_DENY = HOP_BY_HOP | CREDENTIAL_HEADERS | {b"host", b"content-length"}


def _tokens(value: bytes) -> set[bytes]:
    """Header names a `Connection:` header declares hop-by-hop for this message."""
    return {token.strip().lower() for token in value.split(b",")}


def upstream_request_headers(
    client_headers: list[tuple[bytes, bytes]], credential: tuple[str, str] | None
) -> list[tuple[str, str]]:
    """The client's headers, minus the deny-list, `x-buzz-*` and any header carrying a buzz key,
    plus the upstream credential.

    ASGI hands header names lowercased; HTTP names are case-insensitive, so that is the only
    change a header sees on its way up.
    """
    out = []
    named: set[bytes] = set()  # what `Connection:` headers name hop-by-hop
    for name, value in client_headers:
        if name in _REQUEST_DENY or name.startswith(b"x-buzz-"):
            if name == b"connection":
                named |= _tokens(value)
            continue
        if b"buzz-" in value and ANY_KEY.search(value):
            continue
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    if named:
        out = [(name, value) for name, value in out if name.encode("latin-1") not in named]
    if credential is not None:  # None: the credential travels in the query string (Gemini's ?key=)
        out.append(credential)
    return out


def client_response_headers(
    upstream_headers: Iterable[tuple[bytes, bytes]], request_id: bytes, added: Iterable[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as it sent them (name case kept), minus hop-by-hop ones."""
    out = []
    named: set[bytes] = set()  # what `Connection:` headers name hop-by-hop
    for name, value in upstream_headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                named |= _tokens(value)
            continue
        out.append((name, value))
    if named:
        out = [(name, value) for name, value in out if name.lower() not in named]
    out.append((b"x-buzz-request-id", request_id))
    out.extend(added)
    return out


def upstream_request_id(headers: Mapping[str, str]) -> str | None:
    """The upstream's id for the request (`request-id`, or `x-request-id`), kept for the ledger
    only when it looks like an identifier: it is the vendor's text, and not every hop is trusted."""
    return identifier_or_none(headers.get("request-id") or headers.get("x-request-id"))
