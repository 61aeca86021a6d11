"""`GET /sh/claudecode.sh`: the one-command Claude Code set-up, with this gateway's address in it."""

from __future__ import annotations

import re
from importlib import resources

from buzz.asgi import Scope
from buzz.errors import GatewayError, Kind
from buzz.forwarded import TrustedProxies

# The address is pasted into a shell script: only a plain scheme, host and port may go there,
# never anything a crafted Host header could turn into shell syntax.
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")


def public_url(configured: str | None, scope: Scope, proxies: TrustedProxies) -> str:
    """The configured address, else the one this request reached: its Host, with forwarded
    headers believed only from trusted proxies."""
    if configured:
        url = configured
    else:
        scheme, host = proxies.scheme_and_host(scope)
        url = f"{scheme}://{host}"
    url = url.rstrip("/")
    if not _SAFE_URL.fullmatch(url):
        raise GatewayError(Kind.INVALID_REQUEST, "cannot tell this gateway's address: set BUZZ_PUBLIC_URL")
    return url


def claude_code_script(url: str) -> bytes:
    template = (resources.files("buzz.public") / "claudecode.sh").read_text()
    return template.replace("__BUZZ_URL__", url).encode()
