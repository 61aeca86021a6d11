"""Batches (Anthropic's Message Batches, OpenAI's Batch API): who may reach a batch, the one
response value buzz changes, and billing each result exactly once.

- **Whose.** Every batch lives in the upstream account buzz uses for all its keys. A batch made
  through buzz is recorded with its key, project, user and tags; only keys of that project reach
  it (retrieve, cancel, delete, results, and an OpenAI batch's output file). Any other id is a
  404, as the vendor answers an id that is not the account's.
- **`results_url`.** An Anthropic batch object names where its results are, on the vendor's
  host, and the SDKs fetch that URL as given: relayed untouched, they would go around buzz with
  a buzz key and get a 401. So in every such object buzz returns, that value, and only it, is
  rewritten to buzz's own address, as a reverse proxy rewrites a `Location` header. The path
  stays the vendor's, which buzz serves by passing it through. OpenAI's objects name no URL and
  are relayed as they are; a retrieve that names the `output_file_id` is noted, since that file's
  content is the batch's results.
- **Billing.** A batch's usage is known only in its results. As they stream through, each line's
  usage is read (`ResultLines`); once the fetch ends, complete or cut, the results seen are
  claimed in the store, and those never claimed before are billed at the batch price, one ledger
  row each, attributed as the batch was. A second fetch bills nothing again; a cut one bills
  what passed, and the next fetch the rest.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Literal, NamedTuple

import msgspec

from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.errors import GatewayError, Kind
from buzz.proxy.auth import Principal
from buzz.proxy.exchange import Exchange, new_request_id
from buzz.proxy.forward import MAX_WHOLE_BYTES, Passage
from buzz.proxy.inflate import Inflater, TooCompressed, codec
from buzz.proxy.upload import Upload
from buzz.store.base import BatchRecord, Store
from buzz.upstreams import anthropic, openai

_ANTHROPIC_ONE = re.compile(r"/v1/messages/batches/([A-Za-z0-9_-]{1,128})(/cancel|/results)?")
_OPENAI_ONE = re.compile(r"/v1/batches/([A-Za-z0-9_-]{1,128})(/cancel)?")
_OPENAI_CONTENT = re.compile(r"/v1/files/([A-Za-z0-9_-]{1,128})/content")
# The value of every "results_url" member: vendor host and all. JSON strings hold no bare `"`.
_RESULTS_URL = re.compile(rb'("results_url"\s*:\s*")([^"\\]*)(")')
_RESULTS_PATH = b"/v1/messages/batches/"
# A result line holds a whole message; one larger than this is not read (and not billed).
MAX_LINE_BYTES = 64 * 1024 * 1024


class BatchRoute(NamedTuple):
    kind: Literal["collection", "one", "results", "file"]
    ident: str | None  # the batch's id (one, results), or the file's (file); None: the collection


def batch_route(surface: str, path: str) -> BatchRoute | None:
    """What a path names among a surface's batch routes, or None for any other path. `file`: a
    file's content, which may be a batch's results (OpenAI serves them as an output file)."""
    if surface == "anthropic":
        if path == "/v1/messages/batches":
            return BatchRoute("collection", None)
        if one := _ANTHROPIC_ONE.fullmatch(path):
            return BatchRoute("results" if one.group(2) == "/results" else "one", one.group(1))
    elif surface == "openai":
        if path == "/v1/batches":
            return BatchRoute("collection", None)
        if one := _OPENAI_ONE.fullmatch(path):
            return BatchRoute("one", one.group(1))
        if content := _OPENAI_CONTENT.fullmatch(path):
            return BatchRoute("file", content.group(1))
    return None


def rewrite_results_url(body: bytes, base: bytes) -> bytes:
    """`body` with each `results_url` pointing at `base` (buzz's address), keeping the vendor's
    path. Every other byte stays as it was."""

    def swap(found: re.Match[bytes]) -> bytes:
        value = found.group(2)
        at = value.find(_RESULTS_PATH)
        if at < 0:
            return found.group(0)  # null is not matched; anything else unknown is left alone
        return found.group(1) + base + value[at:] + found.group(3)

    return _RESULTS_URL.sub(swap, body)


def decoded(body: bytes, encoding: str) -> bytes | None:
    """`body` as it reads, decoded from its content-encoding; None when buzz cannot (an encoding
    it does not re-encode, or a body that inflates past the bound)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    decoder = codec(encoding)
    if decoder is None or encoding not in _ENCODERS:
        return None
    pieces: list[bytes] = []
    inflater = Inflater(decoder, MAX_WHOLE_BYTES)
    try:
        inflater.feed(body, pieces.append, MAX_WHOLE_BYTES)
        inflater.finish(pieces.append)
    except (TooCompressed, zlib.error, ValueError):
        return None
    plain = b"".join(pieces)
    return plain if len(plain) <= MAX_WHOLE_BYTES and inflater.ended else None


def encoded(plain: bytes, encoding: str) -> bytes:
    """`plain` encoded as `decoded` found it."""
    encoding = encoding.strip().lower()
    return plain if encoding in ("", "identity") else _ENCODERS[encoding](plain)


def _readable() -> frozenset[str]:
    """The content codings buzz can both read and write again: the only ones to ask for where it
    reads the answer. br needs brotli 1.2 or later."""
    return frozenset({"gzip", "x-gzip", "deflate", "identity"} | ({"br"} if codec("br") is not None else set()))


READABLE = _readable()


def _zlib(wbits: int) -> Callable[[bytes], bytes]:
    def encode(data: bytes) -> bytes:
        encoder = zlib.compressobj(wbits=wbits)
        return encoder.compress(data) + encoder.flush()

    return encode


def _brotli(data: bytes) -> bytes:
    import brotli  # a dependency; imported on the first brotli batch object

    return bytes(brotli.compress(data))


_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _zlib(31),
    "x-gzip": _zlib(31),
    "deflate": _zlib(15),
    "br": _brotli,
}


class _NotResults(Exception):
    """The file does not begin as a batch's results do."""


_SNIFF_BYTES = 64
# The first bytes of an OpenAI batch output file: `{"id": "batch_req_…`.
OPENAI_RESULTS_START = re.compile(rb'\{\s*"id"\s*:\s*"batch_req_')


class ResultLines:
    """Reads a batch's JSONL results from a copy of what was relayed: the answered results, as
    (custom_id, model, usage). Only whole lines count: a cut download leaves its last, partial
    line to the next fetch."""

    __slots__ = ("_expect", "_inflater", "_line", "_parse", "_skipping", "seen", "stopped", "unread")

    def __init__(
        self, parse: Callable[[bytes], tuple[str, str, Usage] | None], expect: re.Pattern[bytes] | None = None
    ) -> None:
        """`expect`: how a first line of results begins; a file that begins otherwise is not
        results, and is not read further (an image, a document, an input file)."""
        self._parse = parse  # the vendor's reading of one line
        self._expect = expect
        self.seen: list[tuple[str, str, Usage]] = []
        self.unread = False  # results buzz could not read (an encoding, a bomb): not billed
        self._line = bytearray()
        self._skipping = False  # inside a line too long to read, up to its end
        self.stopped = False
        self._inflater: Inflater | None = None

    def begin(self, content_encoding: str) -> None:
        encoding = content_encoding.strip().lower()
        if encoding and encoding != "identity":
            decoder = codec(encoding)
            if decoder is None:
                self.stopped = self.unread = True
            else:
                self._inflater = Inflater(decoder, MAX_LINE_BYTES)

    def feed(self, chunk: bytes) -> None:
        if self.stopped:
            return
        try:
            if self._inflater is None:
                self._take(chunk)
            else:
                # Results compress well: a chunk may decode to many times its size, all read now.
                self._inflater.feed(chunk, self._take, MAX_LINE_BYTES)
        except TooCompressed:
            self.stopped = self.unread = True
        except _NotResults:
            self.stopped = True

    def finish(self) -> None:
        """The whole answer was relayed: decode what waits, and read a last line without `\\n`."""
        if self.stopped:
            return
        try:
            if self._inflater is not None:
                self._inflater.finish(self._take)
            if self._line and not self._skipping:
                self._read(bytes(self._line))
        except TooCompressed:
            self.stopped = self.unread = True
        except _NotResults:
            self.stopped = True
        self._line.clear()

    def _take(self, data: bytes) -> None:
        if self._expect is not None:
            self._line += data
            if len(self._line) < _SNIFF_BYTES and b"\n" not in self._line:
                return  # too little to tell yet
            if not self._expect.match(self._line):
                raise _NotResults
            self._expect = None
            data, self._line = bytes(self._line), bytearray()
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False
            elif self._line:
                self._line += data[start:end]
                self._read(bytes(self._line))
                self._line.clear()
            else:
                self._read(data[start:end])
            start = end + 1
        if not self._skipping and start < len(data):
            self._line += data[start:]
            if len(self._line) > MAX_LINE_BYTES:
                self._line.clear()
                self._skipping = True

    def _read(self, line: bytes) -> None:
        found = self._parse(line)
        if found is not None:
            self.seen.append(found)


class _Object(msgspec.Struct):
    """The fields of a batch object buzz reads: Anthropic's `type`, OpenAI's `object`."""

    id: str | None = None
    type: str | None = None
    object: str | None = None
    output_file_id: str | None = None


class _Objects(_Object):
    """One batch object, or a page of them."""

    data: list[_Object] | None = None


_decode_object = msgspec.json.Decoder(_Object).decode
_decode_objects = msgspec.json.Decoder(_Objects).decode
# What a created batch object says it is, by surface.
_BATCH_OBJECT = {"anthropic": "message_batch", "openai": "batch"}


class Batches:
    """Records batches made through buzz, guards who reaches them, and bills their results."""

    def __init__(self, store: Store, prices: PriceBook, ledger: LedgerWriter) -> None:
        self._store = store
        self._prices = prices
        self._ledger = ledger

    async def passage(
        self, x: Exchange, method: str, path: str, upload: Upload | None, address: Callable[[], str]
    ) -> tuple[Passage, int]:
        """How a request on another route goes (`forward.Passage`), and the spend room in
        nano-dollars its key must have: a batch about to be made must find caps and balance not
        spent. `address`: buzz's own, for `results_url`."""
        route = batch_route(x.surface, path)
        if route is None:
            return Passage(upload), 0
        principal = x.principal
        assert principal is not None
        if route.kind == "file":
            file_id = route.ident or ""
            batch_id = await self._store.batch_of_file(file_id)
            if batch_id is not None:
                await self._check_owner(principal, batch_id)
            # Any file may be a batch's output, even one whose batch was never retrieved through
            # buzz: its lines are read if it begins as results do, and billed once per file.
            lines = ResultLines(openai.batch_result, OPENAI_RESULTS_START)
            x.results = (file_id, batch_id, lines)
            return Passage(upload, tap=lines, readable=READABLE), 0
        if route.ident is not None:
            await self._check_owner(principal, route.ident)
        if route.kind == "results":
            lines = ResultLines(anthropic.batch_result)
            x.results = (route.ident or "", route.ident, lines)
            return Passage(upload, tap=lines, readable=READABLE), 0
        creating = method == "POST" and route.kind == "collection"
        rewrites = x.surface == "anthropic"  # OpenAI's batch objects name no URL

        async def read(body: bytes, encoding: str) -> bytes | None:
            plain = decoded(body, encoding)
            if plain is None:
                return None  # relayed as it came
            if creating:
                await self._created(x, plain)
            elif not rewrites:
                await self._output_files(principal, plain)
            if not rewrites:
                return None
            try:
                base = address().encode()
            except GatewayError:
                return None  # no address to give (an odd Host and no public_url): as it came
            return encoded(rewrite_results_url(plain, base), encoding)

        return Passage(upload, rewrite=read, readable=READABLE), 1 if creating else 0

    async def _check_owner(self, principal: Principal, batch_id: str) -> None:
        record = await self._store.find_batch(batch_id)
        if record is None or record.project != principal.project:
            raise GatewayError(Kind.NOT_FOUND, f"no batch {batch_id} made through this gateway for this key's project")

    async def _created(self, x: Exchange, body: bytes) -> None:
        """A create answered 2xx: the batch is recorded as the request was attributed."""
        principal = x.principal
        try:
            created = _decode_object(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        kind = _BATCH_OBJECT[x.surface]
        if principal is None or created.id is None or kind not in (created.type, created.object):
            return
        provider = x.provider or x.surface
        batch = BatchRecord(created.id, provider, principal.key_id, principal.project, x.user_id, x.tags, x.ts)
        await self._store.record_batch(batch)

    async def _output_files(self, principal: Principal, body: bytes) -> None:
        """OpenAI batch objects (a retrieve, a cancel, a page of the list): the file each owned
        batch's results are served as, once it names one."""
        try:
            found = _decode_objects(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        for batch in found.data if found.data is not None else [found]:
            if batch.id is None or batch.output_file_id is None:
                continue
            record = await self._store.find_batch(batch.id)
            if record is not None and record.project == principal.project:
                await self._store.record_batch_file(batch.output_file_id, batch.id)

    async def bill(self, x: Exchange, key: str, batch_id: str | None, lines: ResultLines) -> int:
        """Bill the results in `lines` never billed under `key` (the batch, or OpenAI's output
        file); returns their cost in nano-dollars. Attributed as the batch was made, or, for a
        file whose batch buzz never saw, to the key that fetched it."""
        if not lines.seen:
            return 0
        record = await self._store.find_batch(batch_id) if batch_id is not None else None
        principal = x.principal
        if record is None:
            if principal is None or x.provider is None:
                return 0
            record = BatchRecord(key, x.provider, principal.key_id, principal.project, x.user_id, x.tags, x.ts)
        fresh = set(await self._store.claim_batch_results(key, [custom_id for custom_id, _, _ in lines.seen]))
        total = 0
        submit: Callable[[LedgerRow], None] = self._ledger.submit
        for custom_id, model, usage in lines.seen:
            if custom_id not in fresh:
                continue
            fresh.discard(custom_id)  # a custom_id twice in one file is billed once
            try:
                cost, list_cost, version = self._prices.batch_cost(record.provider, model, usage, record.created)
            except Exception:  # claimed, so billed now or never: unpriced, never a silent $0
                cost = list_cost = version = None
            total += cost or 0
            submit(
                LedgerRow(
                    new_request_id(),
                    x.ts,
                    f"{record.provider}_batch",
                    200,
                    "reported",
                    0.0,
                    record.key_id,
                    record.project,
                    record.user_id,
                    record.tags,
                    record.provider,
                    model,
                    None,
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cache_write_5m_tokens,
                    usage.cache_write_1h_tokens,
                    usage.cache_read_tokens,
                    cost,
                    list_cost,
                    version,
                    None,
                    x.upstream_request_id,
                    None,
                )
            )
        return total
