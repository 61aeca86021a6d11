"""The console's forms: read with a size bound, turned into the same typed changes as the CLI's
and the admin API's (`buzz.changes`), so a value one front end refuses the others refuse too.

A form shows a key's or project's whole state, so an empty field means "none": no limit, no
expiry, every model. Expiry is entered and shown in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from buzz.changes import InvalidChange

MAX_FORM_BYTES = 64 * 1024
_MAX_FIELDS = 64
LIMIT_FIELDS = ("rpm", "itpm", "otpm", "concurrency", "daily_usd", "monthly_usd")
_MODEL_SEPARATORS = re.compile(r"[\s,]+")


class FormTooLarge(Exception):
    """A form body past MAX_FORM_BYTES: the console's forms are a few short fields."""


class BadForm(Exception):
    """A body that is not a form at all (not UTF-8, too many fields)."""


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form as name -> first value, read no further than MAX_FORM_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def limit_values(form: dict[str, str]) -> dict[str, Any]:
    return {name: _text(form, name) for name in LIMIT_FIELDS}


def key_values(form: dict[str, str]) -> dict[str, Any]:
    """A key form's fields as `KeyChanges` values: every field, empty ones as None."""
    models = [model for model in _MODEL_SEPARATORS.split(form.get("models", "")) if model]
    return {
        "name": _text(form, "name"),
        **limit_values(form),
        "expires_at": expiry(form.get("expires", "")),
        "models": models or None,
    }


def expiry(text: str) -> datetime | None:
    """`2026-07-01T12:00` (what a datetime-local field sends) or a date, read as UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidChange("expires: not a date and time (YYYY-MM-DD HH:MM, UTC)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def expiry_field(unix: int | None) -> str:
    """A stored expiry as a datetime-local field's value, in UTC."""
    if unix is None:
        return ""
    moment = datetime.fromtimestamp(unix, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S" if moment.second else "%Y-%m-%dT%H:%M")


def checked(form: dict[str, str], name: str) -> bool:
    return name in form


def _text(form: dict[str, str], name: str) -> str | None:
    return form.get(name, "").strip() or None
