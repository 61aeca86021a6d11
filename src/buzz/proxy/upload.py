"""A request body that streams upstream as it arrives: files and batches, up to hundreds of MB.

The body of a routed request (a message, a chat) is read whole, for its model and billing. The
other routes' bodies are relayed chunk by chunk instead, so a 500 MB upload costs buzz one chunk
of memory at a time, under a size limit of its own.
"""

from __future__ import annotations

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

    __slots__ = ("_limit", "_receive", "_x", "failure", "finished", "scan")

    def __init__(self, receive: Receive, limit: int, x: Exchange) -> None:
        self._receive = receive
        self._limit = limit
        self._x = x
        self.failure: Exception | None = None
        self.finished = False  # the whole body was read: `receive` is free for the disconnect watch
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
                return


# A `"model": "..."` member in JSON; one inside a string would have its quotes escaped.
_MODEL = re.compile(rb'(?<![\\])"model"\s{0,64}:\s{0,64}"([^"\\]{1,256})"')
_OVERLAP = 512  # bytes kept from one chunk for the next: more than a match can span


class ModelScan:
    """For a key with a model allow-list: every model an upload names (a batch's requests, a
    batch input file's lines, an image request) must be one the key may use. The first that is
    not stops the upload before the rest goes up, so the vendor never gets it whole."""

    __slots__ = ("_check", "_tail")

    def __init__(self, check: Callable[[str], None]) -> None:
        self._check = check  # raises GatewayError for a model the key may not use
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        data = self._tail + chunk
        for found in _MODEL.finditer(data):
            self._check(found.group(1).decode("utf-8", "replace"))
        self._tail = data[-_OVERLAP:]
