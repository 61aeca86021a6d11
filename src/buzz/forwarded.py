"""Who is really on the other end of a connection, when buzz sits behind a reverse proxy.

`X-Forwarded-For`, `-Proto` and `-Host` are believed only from the proxies an operator listed
(`server.trusted_proxies`): from anyone else they are whatever a client chose to write, and buzz
uses them to throttle failed sign-ins and to write its own address into the install script.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from buzz.asgi import Scope, header_map
from buzz.errors import GatewayError, Kind

# The address goes into a shell script and into answers: only a plain scheme, host, port and
# path, never anything a crafted Host header could turn into shell syntax or break JSON with.
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """ "10.0.0.0/8", "127.0.0.1" -> networks; ValueError naming the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address or network") from exc
    return tuple(networks)


class TrustedProxies:
    def __init__(self, networks: Sequence[Network] = ()) -> None:
        self._networks = tuple(networks)

    def _trusted(self, host: str) -> bool:
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def _peer(self, scope: Scope) -> str:
        client = scope.get("client")
        return str(client[0]) if client else ""

    def client(self, scope: Scope) -> str:
        """The client's address: the peer, or, behind trusted proxies, the nearest address in
        `X-Forwarded-For` that is not one of them (the ones before it could be forged)."""
        peer = self._peer(scope)
        if not self._trusted(peer):
            return peer
        chain = header_map(scope["headers"]).get(b"x-forwarded-for", b"").decode("latin-1")
        for hop in reversed([part.strip() for part in chain.split(",") if part.strip()]):
            if not self._trusted(hop):
                return hop
        return peer

    def scheme_and_host(self, scope: Scope) -> tuple[str, str]:
        headers = header_map(scope["headers"])
        scheme, host = str(scope.get("scheme", "http")), headers.get(b"host", b"").decode("latin-1")
        if self._trusted(self._peer(scope)):
            proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
            forwarded_host = headers.get(b"x-forwarded-host", b"").decode("latin-1").split(",")[0].strip()
            if forwarded_host:
                host = forwarded_host
        return scheme, host


def public_url(configured: str | None, scope: Scope, proxies: TrustedProxies) -> str:
    """This gateway's address as its clients reach it: the configured one, else the one this
    request reached, its Host, with forwarded headers believed only from trusted proxies."""
    if configured:
        url = configured
    else:
        scheme, host = proxies.scheme_and_host(scope)
        url = f"{scheme}://{host}"
    url = url.rstrip("/")
    if not _SAFE_URL.fullmatch(url):
        raise GatewayError(Kind.INVALID_REQUEST, "cannot tell this gateway's address: set BUZZ_PUBLIC_URL")
    return url
