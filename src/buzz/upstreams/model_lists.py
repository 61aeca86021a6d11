"""The OpenAI surface's `GET /v1/models`: the models the accounts behind buzz really reach.

Each configured vendor's own list is fetched with buzz's upstream credential (OpenAI, xAI and
Google in OpenAI's shape, Anthropic in its own, page by page) and merged, vendor by vendor in
registry order. An id is kept when buzz routes it to the vendor that listed it, so everything
listed can be called through buzz, an account's fine-tunes included. A vendor whose list cannot
be read (an error status, a timeout, no connection, an answer that is not its list) is stood in
for by buzz's catalogue entries for it, and the union says so.

The union is cached: `ttl` seconds when every vendor answered, `retry_ttl` when one did not.
Callers that find it stale while a refresh is running wait for that refresh rather than start
their own. Nothing of a list's body is ever logged, only which vendor failed and how.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from buzz import providers
from buzz.catalogue import Catalogue
from buzz.config import Config, CredentialConfig
from buzz.identifiers import is_identifier
from buzz.providers import Provider

log = logging.getLogger("buzz.models")

DEFAULT_TTL = 300.0
DEFAULT_RETRY_TTL = 30.0
DEFAULT_TIMEOUT = 10.0
_MAX_BYTES = 8 * 1024 * 1024  # a list is tens of kilobytes; anything near this is not a list
_ANTHROPIC_PAGE = 1000  # the largest page Anthropic serves
_MAX_PAGES = 20


@dataclass(frozen=True, slots=True)
class ListedModel:
    id: str
    provider: str
    created: int  # unix seconds
    from_catalogue: bool = False  # buzz's entry, standing in for a vendor whose list failed


def _by_id(models: Iterable[ListedModel]) -> Mapping[str, ListedModel]:
    return MappingProxyType({model.id: model for model in models})


@dataclass(frozen=True, slots=True)
class ModelUnion:
    models: tuple[ListedModel, ...]
    from_catalogue: tuple[str, ...]  # vendors whose own list could not be read
    by_id: Mapping[str, ListedModel] = field(default_factory=dict)

    @classmethod
    def of(cls, models: Sequence[ListedModel], from_catalogue: Sequence[str]) -> ModelUnion:
        return cls(tuple(models), tuple(from_catalogue), _by_id(models))


class _Unusable(Exception):
    """The vendor answered, but not with its model list."""


class _OpenAIModel(msgspec.Struct):
    id: str
    created: int | float | None = None


class _OpenAIList(msgspec.Struct):
    data: list[_OpenAIModel]


class _AnthropicModel(msgspec.Struct):
    id: str
    created_at: str | None = None


class _AnthropicPage(msgspec.Struct):
    data: list[_AnthropicModel]
    has_more: bool = False
    last_id: str | None = None


_decode_openai = msgspec.json.Decoder(_OpenAIList).decode
_decode_anthropic = msgspec.json.Decoder(_AnthropicPage).decode


def _seconds(rfc3339: str | None) -> int:
    if not rfc3339:
        return 0
    try:
        return int(datetime.fromisoformat(rfc3339).timestamp())
    except ValueError:
        return 0


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without its content-encoding (buzz's session does not decompress)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, wbits=16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise _Unusable(f"content-encoding {encoding}")


class ModelLists:
    """Every configured vendor's model list, merged and cached; see the module's docstring."""

    def __init__(
        self,
        config: Config,
        catalogue: Catalogue,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = DEFAULT_TTL,
        retry_ttl: float = DEFAULT_RETRY_TTL,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._vendors = [
            (vendor, upstream.credentials[0])
            for vendor in providers.REGISTRY
            if (upstream := config.provider(vendor.name)).credentials
        ]
        self._catalogue = catalogue
        self._session = session
        self._clock = clock
        self._ttl = ttl
        self._retry_ttl = retry_ttl
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._union: ModelUnion | None = None
        self._fresh_until = 0.0
        self._refresh: asyncio.Future[ModelUnion] | None = None

    async def union(self) -> ModelUnion:
        """The cached union, or a fresh one when it is stale."""
        if self._union is not None and self._clock() < self._fresh_until:
            return self._union
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._build())
        # Shielded: a caller that goes away must not cancel the refresh the others wait for.
        return await asyncio.shield(self._refresh)

    async def close(self) -> None:
        refresh, self._refresh = self._refresh, None
        if refresh is not None:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)

    async def _build(self) -> ModelUnion:
        try:
            lists = await asyncio.gather(*(self._vendor_list(vendor, upstream) for vendor, upstream in self._vendors))
            models: list[ListedModel] = []
            seen: set[str] = set()
            fallback = []
            for (vendor, _), listed in zip(self._vendors, lists, strict=True):
                if listed is None:
                    fallback.append(vendor.name)
                    listed = self._catalogue_list(vendor)
                for model in listed:
                    if model.id not in seen:
                        seen.add(model.id)
                        models.append(model)
            union = ModelUnion.of(models, fallback)
            self._union = union
            self._fresh_until = self._clock() + (self._retry_ttl if fallback else self._ttl)
            return union
        finally:
            self._refresh = None

    def _catalogue_list(self, vendor: Provider) -> list[ListedModel]:
        return [
            ListedModel(entry.id, vendor.name, _seconds(entry.created_at), from_catalogue=True)
            for entry in self._catalogue.list(vendor.name)
        ]

    async def _vendor_list(self, vendor: Provider, upstream: CredentialConfig) -> list[ListedModel] | None:
        """The vendor's own list as buzz serves it, or None when it could not be read."""
        try:
            if vendor.list_shape == "anthropic":
                raw = await self._anthropic_ids(vendor, upstream)
            else:
                raw = await self._openai_ids(vendor, upstream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever went wrong, the catalogue stands in for this vendor
            log.warning("model list of %s not read (%s); its catalogue entries stand in", vendor.name, _reason(exc))
            return None
        listed = []
        for model_id, created in raw:
            model_id = model_id.removeprefix(vendor.listed_id_prefix)
            # Kept only if a request naming it would reach this vendor through buzz.
            if is_identifier(model_id) and self._catalogue.provider_for(model_id) == vendor.name:
                listed.append(ListedModel(model_id, vendor.name, created))
        return listed

    async def _openai_ids(self, vendor: Provider, upstream: CredentialConfig) -> list[tuple[str, int]]:
        document = _decode_openai(await self._get(vendor, upstream, upstream.base_url + vendor.models_path))
        return [(model.id, int(model.created or 0)) for model in document.data]

    async def _anthropic_ids(self, vendor: Provider, upstream: CredentialConfig) -> list[tuple[str, int]]:
        ids: list[tuple[str, int]] = []
        after: str | None = None
        for _ in range(_MAX_PAGES):
            url = f"{upstream.base_url}{vendor.models_path}?limit={_ANTHROPIC_PAGE}"
            if after is not None:
                url += "&after_id=" + quote(after, safe="")
            page = _decode_anthropic(await self._get(vendor, upstream, url))
            ids += [(model.id, _seconds(model.created_at)) for model in page.data]
            if not page.has_more or not page.last_id:
                return ids
            after = page.last_id
        raise _Unusable(f"more than {_MAX_PAGES} pages")

    async def _get(self, vendor: Provider, upstream: CredentialConfig, url: str) -> bytes:
        # The pool's first credential, its key with its own base URL: a key never goes elsewhere.
        headers = vendor.list_request_headers(upstream.api_key)
        async with self._session.get(
            URL(url, encoded=True), headers=headers, timeout=self._timeout, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise _Unusable(f"status {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > _MAX_BYTES:
                    raise _Unusable("answer too large")
            return _decoded(bytes(body), response.headers.get("content-encoding", ""))


def _reason(exc: Exception) -> str:
    """How a fetch failed, in words that quote nothing the vendor sent."""
    if isinstance(exc, _Unusable):
        return str(exc)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, msgspec.DecodeError):
        return "not a model list"
    return type(exc).__name__
