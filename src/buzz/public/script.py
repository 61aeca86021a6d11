"""`GET /sh/claudecode.sh`: the one-command Claude Code set-up, with this gateway's address in it."""

from __future__ import annotations

import re
from importlib import resources

from buzz.errors import GatewayError, Kind

# The address is pasted into a shell script: only a plain scheme, host and port may go there,
# never anything a crafted Host header could turn into shell syntax.
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")


def public_url(configured: str | None, scope: dict[str, object]) -> str:
    if configured:
        url = configured
    else:
        headers = dict(scope["headers"])  # type: ignore[call-overload]
        host = headers.get(b"host", b"").decode("latin-1")
        forwarded = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip()
        scheme = forwarded if forwarded in ("http", "https") else str(scope.get("scheme", "http"))
        url = f"{scheme}://{host}"
    url = url.rstrip("/")
    if not _SAFE_URL.fullmatch(url):
        raise GatewayError(Kind.INVALID_REQUEST, "cannot tell this gateway's address: set BUZZ_PUBLIC_URL")
    return url


def claude_code_script(url: str) -> bytes:
    template = (resources.files("buzz.public") / "claudecode.sh").read_text()
    return template.replace("__BUZZ_URL__", url).encode()
