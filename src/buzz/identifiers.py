"""The one rule for text from outside that buzz keeps: it must look like an identifier.

A model id or an upstream request id lands in the ledger, the CLI's tables and the admin API.
Anything with spaces, markup, control characters or sheer length is client or upstream text,
not a name, and is never kept.
"""

from __future__ import annotations

import re

MAX_LENGTH = 128
CHARSET = "letters, digits and . - _ : / @ +"
_IDENTIFIER = re.compile(rf"[A-Za-z0-9._:/@+\-]{{1,{MAX_LENGTH}}}")


def is_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None


def identifier_or_none(value: str | None) -> str | None:
    """`value` when it is an identifier; None otherwise, so that it is not kept."""
    return value if value is not None and _IDENTIFIER.fullmatch(value) is not None else None
