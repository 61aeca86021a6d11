"""`GET /sh/claudecode.sh`: the one-command Claude Code set-up, with this gateway's address in it."""

from __future__ import annotations

from importlib import resources

from buzz.forwarded import public_url

__all__ = ["claude_code_script", "public_url"]


def claude_code_script(url: str) -> bytes:
    template = (resources.files("buzz.public") / "claudecode.sh").read_text()
    return template.replace("__BUZZ_URL__", url).encode()
