"""Which headers cross buzz, each way. Everything end to end does, except a short deny-list."""

from __future__ import annotations

from collections.abc import Iterable

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

# The client's credential never travels on; `host` and `content-length` are set by the HTTP
# client for the upstream connection and body.
_REQUEST_DENY = HOP_BY_HOP | {b"host", b"content-length", b"x-api-key", b"authorization", b"x-goog-api-key"}


def _tokens(value: bytes) -> set[bytes]:
    """Header names a `Connection:` header declares hop-by-hop for this message."""
    return {token.strip().lower() for token in value.split(b",")}


def upstream_request_headers(
    client_headers: list[tuple[bytes, bytes]], credential: tuple[str, str] | None
) -> list[tuple[str, str]]:
    """The client's headers, minus the deny-list and `x-buzz-*`, plus the upstream credential.

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
