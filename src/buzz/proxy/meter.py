"""The meter: a tap that reads usage from a copy of the response, after each chunk was relayed.

It never changes or delays what the client gets, and it reads in bounded memory and bounded
time whatever the upstream sends. It keeps at most `max_bytes` of an answer: the unfinished
line and event of a stream, or a plain JSON body until it is read. Past that it stops keeping:
an event too large is skipped (later events are still read, since usage usually comes last), a
body too large is not read at all, and compressed input is decoded in bounded steps
(`buzz.proxy.inflate`). Per chunk it reads at most `LINES_PER_FEED` lines; the rest waits, and
is read once the client has the whole answer (`catch_up`). The vendor's rules then bill by
estimate, counting what went unread as output, and the result carries a `usage_note` saying
why. Nothing the meter sees is written anywhere. What a vendor's usage looks like lives in
`buzz.upstreams.<vendor>`; this module only turns bytes into events and bodies.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable

from buzz.config import METER_MAX_BYTES
from buzz.proxy.inflate import Inflater, TooCompressed, codec
from buzz.upstreams.base import MeterResult, UsageNote, UsageRules

log = logging.getLogger("buzz.meter")

# Past the first blank line, more blank lines do nothing: collapsing a run of them in C keeps a
# flood of newlines from costing a Python step each.
_BLANK_RUN = re.compile(rb"\n\n\n+")
# Lines the parser reads for one relayed chunk: a few milliseconds of Python even when every line
# is a tiny event, and more than a 64 KiB chunk of any vendor's stream holds. Lines beyond wait,
# unsplit, for the next chunk; at the end of the answer, what waits is read within LINES_AT_END.
LINES_PER_FEED = 2048
LINES_AT_END = 8 * LINES_PER_FEED


class SSEParser:
    """Incremental `text/event-stream` parsing: LF, CRLF or CR line ends; events split anywhere.

    Linear in the bytes fed. It holds only the unfinished line and the data of the event being
    read, together at most `max_bytes`: an event that would hold more (its data so far and its
    current line, of any field) is dropped as it arrives, up to the blank line that ends it, and
    `on_skip` is told its size (its data so far, then its lines with their line ends, LF-counted).
    The same events are skipped, with the same sizes, however the stream is cut into chunks.

    It reads at most the lines `allow` granted; text beyond waits (`waiting`) for the next grant.
    Without grants it reads everything.
    """

    def __init__(
        self,
        on_event: Callable[[bytes | None, bytes], None],
        max_bytes: int = METER_MAX_BYTES,
        on_skip: Callable[[int], None] | None = None,
    ) -> None:
        self._on_event = on_event
        self._on_skip = on_skip
        self._max = max_bytes
        self._line = bytearray()  # the unfinished last line
        self._after_cr = False  # the last chunk ended with CR: an LF next is the rest of a CRLF
        self._event: bytes | None = None
        self._data: bytes | bytearray | None = None  # the event's data lines, joined by LF
        self._skipped: int | None = None  # while in an event being dropped: its size so far
        self._dropping_line = False  # the unfinished line belongs to an event being dropped
        self._allowance: int | None = None  # lines left to read until the next grant; None: all
        self._waiting: deque[bytes] = deque()  # text (LF-only, from a line start) beyond the grant
        self._waiting_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the unfinished line and event."""
        return len(self._line) + (len(self._data) if self._data is not None else 0)

    @property
    def waiting(self) -> int:
        """Bytes fed but not read yet: the lines beyond the last grant."""
        return self._waiting_bytes

    def allow(self, lines: int) -> None:
        """Read up to `lines` more lines, starting with those waiting, until the next grant."""
        self._allowance = lines
        waiting = self._waiting
        while waiting and self._allowance:
            data = waiting.popleft()
            self._waiting_bytes -= len(data)
            self._read(data)

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n\n" in chunk:
            chunk = _BLANK_RUN.sub(b"\n\n", chunk)
        if self._waiting:  # behind: the new text waits behind the old, as it came
            self._wait(chunk)
            return
        self._read(chunk)

    def _wait(self, data: bytes, first: bool = False) -> None:
        if first:
            self._waiting.appendleft(data)
        else:
            self._waiting.append(data)
        self._waiting_bytes += len(data)

    def _read(self, data: bytes) -> None:
        if b"\n" not in data:
            self._hold(data)
            return
        allowance = self._allowance
        if allowance is None:
            lines = data.split(b"\n")
            last = lines.pop()
        elif allowance <= 0:
            self._wait(data, first=True)
            return
        else:
            lines = data.split(b"\n", allowance)  # stops after `allowance` lines: no full scan
            last = lines.pop()
            if len(lines) == allowance and b"\n" in last:  # more lines than granted: the rest waits
                self._wait(last, first=True)
                last = b""
            self._allowance = allowance - len(lines)
        if self._line or self._dropping_line:
            self._hold(lines[0])  # the end of the line held from earlier chunks
            if self._dropping_line:
                self._dropping_line = False
                self._skipped = (self._skipped or 0) + 1  # its line end
                del lines[0]
            else:
                lines[0], self._line = bytes(self._line), bytearray()
        self._lines(lines)
        self._hold(last)

    def _hold(self, piece: bytes) -> None:
        """Part of a line whose end has not arrived: kept, or counted if its event is dropped."""
        if not piece:
            return
        if self._skipped is not None:
            self._skipped += len(piece)
            self._dropping_line = True
            return
        self._line += piece
        if self.buffered > self._max:
            self._drop(len(self._line))
            self._line = bytearray()
            self._dropping_line = True

    def _drop(self, size: int) -> None:
        """Drop the event being read: with `size` more bytes it would outgrow the cap."""
        self._skipped = size + (len(self._data) if self._data is not None else 0)
        self._event, self._data = None, None

    def _lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if not line:
                if self._skipped is not None:
                    skipped, self._skipped = self._skipped, None
                    if self._on_skip is not None:
                        self._on_skip(skipped)
                elif self._data is not None or self._event is not None:
                    data, event = self._data, self._event
                    self._event, self._data = None, None
                    self._on_event(event, b"" if data is None else data if type(data) is bytes else bytes(data))
                continue
            if self._skipped is not None:
                self._skipped += len(line) + 1
                continue
            data = self._data
            if len(line) + (len(data) if data is not None else 0) > self._max:
                self._drop(len(line) + 1)
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data = value if data is None else _joined(data, value)
            elif name == b"event":
                self._event = value

    def abandon(self) -> int:
        """Stop where it is: the bytes it held, was dropping or had waiting, never to be read."""
        held = self.buffered + self.waiting + (self._skipped or 0)
        self._line, self._event, self._data, self._skipped, self._dropping_line = bytearray(), None, None, None, False
        self._waiting.clear()
        self._waiting_bytes = 0
        return held

    def close(self) -> None:
        """A stream that ends without a final blank line still delivers its last event.

        Lines still waiting for a grant are read first, all of them.
        """
        self._allowance = None
        while self._waiting:
            data = self._waiting.popleft()
            self._waiting_bytes -= len(data)
            self._read(data)
        if self._dropping_line:
            self._dropping_line = False
            self._skipped = (self._skipped or 0) + 1  # counted as if its line had ended
        elif self._line:
            line, self._line = bytes(self._line), bytearray()
            self._lines([line])
        self._lines([b""])


def _joined(data: bytes | bytearray, value: bytes) -> bytearray:
    """An event's second and later data lines: one growing buffer, never a list of small pieces."""
    out = data if isinstance(data, bytearray) else bytearray(data)
    out += b"\n"
    out += value
    return out


class _Stop(Exception):
    """The meter gave up on the answer in the middle of decoding a chunk."""


class _Later(Exception):
    """The parser has read its lines for this chunk: decoding more can wait for the next."""


class Meter:
    """Feeds relayed chunks to a vendor's rules, as SSE events or as one JSON body.

    The relay calls `feed` after each chunk went to the client, then, once the client has the
    whole answer, `catch_up` while `behind` (a bounded step per turn of the event loop), and
    `result` at the end, complete or not.
    """

    # One is made per request: slots make its many fields cheaper to set.
    __slots__ = (
        "_billable",
        "_body",
        "_ending",
        "_inflater",
        "_max",
        "_note",
        "_parser",
        "_plain",
        "_rules",
        "_size",
        "_stopped",
        "_unread",
        "behind",
    )

    def __init__(
        self,
        rules: UsageRules,
        content_type: str,
        content_encoding: str,
        status: int = 200,
        max_bytes: int = METER_MAX_BYTES,
    ) -> None:
        self._rules = rules
        # Vendors do not bill error answers; their bodies are read only for the error type.
        self._billable = status < 400
        self._max = max_bytes
        stream = content_type.lower().startswith("text/event-stream")
        self._parser = SSEParser(rules.on_event, max_bytes, self._skipped_event) if stream else None
        self._body: list[bytes] = []
        self._size = 0  # decoded bytes of a body, kept or not
        self._unread = 0  # bytes the rules never saw, to count as output
        self._note: UsageNote | None = None
        self._stopped = False  # reading nothing more: the answer is unreadable or too large
        self._ending = False  # the answer is complete: decode what waits, within the cap, now
        self.behind = False  # lines or compressed input wait to be read
        self._inflater: Inflater | None = None
        if content_encoding and content_encoding.strip().lower() != "identity":
            decoder = codec(content_encoding.strip().lower())
            if decoder is None:
                self._stopped = True  # an encoding buzz cannot decode: bill by estimate
            else:
                self._inflater = Inflater(decoder, max_bytes)
        self._plain = not stream and self._inflater is None  # a JSON body as it came: most answers

    @property
    def retained(self) -> int:
        """Bytes of the answer the meter holds right now: the body, event, line or compressed
        input it has not finished with."""
        held = sum(len(piece) for piece in self._body)
        if self._parser is not None:
            held += self._parser.buffered + self._parser.waiting
        if self._inflater is not None:
            held += self._inflater.backlog
        return held

    @property
    def decoded(self) -> int:
        """Bytes decoded from a compressed answer so far."""
        return self._inflater.decoded if self._inflater is not None else 0

    def feed(self, chunk: bytes) -> None:
        if self._stopped:
            if self._note is not None:
                self._unread += len(chunk)  # past a cap: counted as output
            return
        if self._plain:  # the common case, kept short: a body that still fits
            size = self._size + len(chunk)
            if size <= self._max:
                self._size = size
                self._body.append(chunk)
                return
        parser = self._parser
        try:
            if parser is not None:
                parser.allow(LINES_PER_FEED)
            if self._inflater is None:
                self._take(chunk)
            else:
                self._inflater.feed(chunk, self._take)
        except (_Stop, _Later):
            pass
        except TooCompressed:
            self._give_up("decoded_over_cap")
        except Exception as exc:  # a meter fault must never reach the relay
            self._stopped = True
            log.warning("usage meter stopped: %s", type(exc).__name__)
        if parser is not None and not self._stopped and parser.waiting > self._max:
            self._give_up("lines_over_cap")  # more lines than it reads, for longer than the cap holds
        self.behind = self._waiting()

    def catch_up(self) -> None:
        """Once the client has the whole answer: one more bounded step of reading what waits
        (lines beyond a chunk's share, compressed input beyond its budget)."""
        if self.behind:
            self.feed(b"")

    def _waiting(self) -> bool:
        if self._stopped:
            return False
        parser, inflater = self._parser, self._inflater
        return bool(parser is not None and parser.waiting) or (inflater is not None and inflater.pending)

    def _take(self, data: bytes) -> None:
        """Decoded bytes: to the SSE parser, or kept as the body while it fits the cap."""
        parser = self._parser
        if parser is not None:
            parser.feed(data)
            if parser.waiting and self._inflater is not None and not self._ending:
                raise _Later  # the rest stays compressed until the next chunk
            return
        if data:
            self._size += len(data)
            if self._size > self._max:
                self._give_up("body_over_cap")
                raise _Stop
            self._body.append(data)

    def _give_up(self, note: UsageNote) -> None:
        self._note = note
        self._stopped = True
        self.behind = False
        self._body = []
        inflater = self._inflater
        if self._parser is None:
            # An unread body: its size as relayed (compressed or not) stands for its output.
            self._unread = inflater.received if inflater is not None else self._size
        else:  # what was read stands; the event in progress and the input not decoded are unread
            self._unread += self._parser.abandon()
            if inflater is not None:
                self._unread += inflater.backlog
        if inflater is not None:
            inflater.release()

    def _skipped_event(self, size: int) -> None:
        self._unread += size
        if self._note is None:
            self._note = "event_over_cap"

    def result(self, complete: bool) -> MeterResult:
        if complete and not self._stopped:
            try:
                if self._plain:
                    body = self._body
                    self._rules.on_body(body[0] if len(body) == 1 else b"".join(body))
                else:
                    self._finish()
            except _Stop:
                pass
            except TooCompressed:
                self._give_up("decoded_over_cap")
            except Exception as exc:
                self._stopped = True
                log.warning("usage meter stopped: %s", type(exc).__name__)
        self._body = []
        note = self._note
        if note is not None and self._billable:
            self._rules.on_skipped(self._unread)
        # Anything left unread makes the figures an estimate, even if the final usage was read.
        result = self._rules.result(complete and not self._stopped and note is None)
        if note is not None:
            result.usage_note = note
        if not self._billable:
            return MeterResult(None, "none", result.model, result.error_type, note)
        return result

    def _finish(self) -> None:
        """The end of a stream or a compressed body: what still waits is read now, within bounds."""
        self._ending = True
        parser = self._parser
        if parser is not None:
            parser.allow(LINES_AT_END)
        if self._inflater is not None:
            self._inflater.finish(self._take)
        if parser is None:
            body = self._body
            self._rules.on_body(body[0] if len(body) == 1 else b"".join(body))
        elif parser.waiting:
            self._give_up("lines_over_cap")
        else:
            parser.close()
