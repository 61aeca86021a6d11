"""A request body that streams upstream as it arrives: files and batches, up to hundreds of MB.

The body of a routed request (a message, a chat) is read whole, for its model and billing. The
other routes' bodies are relayed chunk by chunk instead, so a 500 MB upload costs buzz one chunk
of memory at a time, under a size limit of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable

from buzz.asgi import Receive
from buzz.errors import GatewayError, Kind
from buzz.proxy.exchange import Exchange


class ClientGone(Exception):
    """The client hung up before it finished sending its request."""


def too_large(limit: int) -> GatewayError:
    return GatewayError(Kind.TOO_LARGE, f"request body is larger than the {limit}-byte limit")


class Upload:
    """The client's body as an async iterable for the HTTP client, counted into the exchange.

    What stopped it (the client left, the limit was passed) is kept in `failure`: the HTTP client
    reports a body that failed as its own error, and the pipeline must answer for the real cause.
    """

    __slots__ = ("_limit", "_receive", "_x", "failure", "finished", "on_finish", "scan")

    def __init__(self, receive: Receive, limit: int, x: Exchange) -> None:
        self._receive = receive
        self._limit = limit
        self._x = x
        self.failure: Exception | None = None
        self.finished = False  # the whole body was read: `receive` is free for the disconnect watch
        self.on_finish: Callable[[], None] | None = None  # told once the whole body was read
        # Reads each chunk before it goes up, and raises GatewayError to stop the upload there.
        self.scan: Callable[[bytes], None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        x = self._x
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.failure = ClientGone()
                raise self.failure
            chunk: bytes = message.get("body", b"")
            x.body_bytes += len(chunk)
            if x.body_bytes > self._limit:
                self.failure = too_large(self._limit)
                raise self.failure
            if chunk:
                if self.scan is not None:
                    try:
                        self.scan(chunk)
                    except GatewayError as error:
                        self.failure = error
                        raise
                yield chunk
            if not message.get("more_body", False):
                self.finished = True
                if self.on_finish is not None:
                    self.on_finish()
                return


# A JSON string token, escapes and all, then the colon that makes it a member's name, if any.
_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"(\s*:\s*)?')
_BLANK_TO_END = re.compile(rb"\s*\Z")
# The longest token carried from one chunk to the next; a longer string is skipped to its end.
_CARRY = 512  # names and model ids are far shorter


class ModelScan:
    """For a key with a model allow-list: every model an upload names (a batch's requests, a
    batch input file's lines, an image request) must be one the key may use. The first that is
    not stops the upload before the rest goes up, so the vendor never gets it whole.

    It reads JSON's strings as the body streams, however they are split across chunks and
    however they are written (escapes, whitespace), and checks the string value of every member
    named `model`. Bytes outside strings are not JSON it needs to understand: a multipart
    upload's headers, or a binary file, pass unread but for their quotes."""

    __slots__ = ("_carry", "_check", "_skipping", "_value_next")

    def __init__(self, check: Callable[[str], None]) -> None:
        self._check = check  # raises GatewayError for a model the key may not use
        self._carry = b""  # the start of a token the chunk ended inside
        self._skipping = False  # inside a string too long to carry, up to its closing quote
        self._value_next = False  # a `"model":` was read: a string starting now is its value

    def __call__(self, chunk: bytes) -> None:
        data, self._carry = self._carry + chunk, b""
        pos = 0
        if self._skipping:
            pos = _string_end(data, 0)
            if pos < 0:
                self._carry = _trailing_backslashes(data)  # an escape split across chunks
                return
            self._skipping = False
        while (quote := data.find(b'"', pos)) >= 0:
            found = _STRING.match(data, quote)
            if found is None or _BLANK_TO_END.match(data, found.end()):
                # The chunk ends inside the token, or just after it, where a colon or the value's
                # quote may still come: the token is read again with the next chunk.
                if len(data) - quote <= _CARRY:
                    self._carry = data[quote:]
                    return
                # Too long for a member's name or a model id: skipped to its end. A value of
                # `model` that long is checked as far as it goes, and no model is named so.
                if self._value_next:
                    self._check(_text(data[quote + 1 : quote + 257]))
                self._value_next = False
                pos = _string_end(data, quote + 1)
                if pos < 0:
                    self._skipping = True
                    self._carry = _trailing_backslashes(data)
                    return
                continue
            token, pos = found.group(1), found.end()
            if self._value_next:
                self._value_next = False
                self._check(_text(token))
            elif found.group(2) is not None and _text(token) == "model":
                # Its value is a model only if a string follows the colon at once.
                self._value_next = data[pos] == 0x22


def _trailing_backslashes(data: bytes) -> bytes:
    return data[len(data.rstrip(b"\\")) :]


def _string_end(data: bytes, start: int) -> int:
    """Where a string that is open at `start` ends (just past its closing quote), or -1."""
    pos = start
    while (quote := data.find(b'"', pos)) >= 0:
        slashes = 0
        while quote - slashes - 1 >= start and data[quote - slashes - 1] == 0x5C:
            slashes += 1
        if slashes % 2 == 0:
            return quote + 1
        pos = quote + 1
    return -1


def _text(token: bytes) -> str:
    if b"\\" not in token:
        return token.decode("utf-8", "replace")
    try:
        return str(json.loads(b'"' + token + b'"'))
    except ValueError:
        return token.decode("utf-8", "replace")
