"""route: the request's model -> the upstream that serves it, with its URL and credential.

Only a copy of the body is read, and only for `model`, `stream` and `metadata.user_id`; the
bytes forwarded are the bytes received.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from buzz.catalogue import Catalogue
from buzz.config import Config
from buzz.errors import GatewayError, Kind

_MAX_USER_ID = 256
_MAX_MODEL_ID = 256


class _Metadata(msgspec.Struct):
    user_id: object = None


class _Head(msgspec.Struct):
    """What routing and billing read from a request body. Other fields are never decoded into
    objects (msgspec skips them while validating the JSON)."""

    model: object = None
    stream: object = None
    metadata: object = None


_decode_head = msgspec.json.Decoder(_Head).decode


@dataclass(frozen=True, slots=True)
class RequestHead:
    model: str
    stream: bool
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    url: str
    credential: tuple[str, str]  # the header, with the upstream's key, that replaces the client's


def read_head(body: bytes) -> RequestHead:
    try:
        head = _decode_head(body)
    except msgspec.ValidationError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body must be a JSON object") from exc
    except msgspec.DecodeError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body is not valid JSON") from exc
    if not isinstance(head.model, str) or not head.model:
        raise GatewayError(Kind.INVALID_REQUEST, "model: field required (a model id string)")
    if len(head.model) > _MAX_MODEL_ID:
        raise GatewayError(Kind.INVALID_REQUEST, f"model: longer than {_MAX_MODEL_ID} characters")
    user_id = None
    if isinstance(head.metadata, dict):
        value = head.metadata.get("user_id")
        if isinstance(value, str) and value:
            user_id = value[:_MAX_USER_ID]
    return RequestHead(model=head.model, stream=head.stream is True, user_id=user_id)


class Router:
    def __init__(self, config: Config, catalogue: Catalogue) -> None:
        self._config = config
        self._catalogue = catalogue

    def routable(self, provider: str) -> bool:
        return self._config.provider(provider).api_key is not None

    def route(self, model: str, path_and_query: str, client_credential_header: bytes) -> Route:
        provider = self._catalogue.provider_for(model)
        if provider is None or not self.routable(provider):
            raise GatewayError(
                Kind.NOT_FOUND,
                f"model {model!r} is not served by this gateway; GET /v1/models lists the models it routes",
            )
        upstream = self._config.provider(provider)
        assert upstream.api_key is not None  # routable() checked it
        # Put the upstream key where the client put its own (Bearer or x-api-key).
        if client_credential_header == b"authorization":
            credential = ("authorization", f"Bearer {upstream.api_key}")
        else:
            credential = ("x-api-key", upstream.api_key)
        return Route(provider=provider, url=upstream.base_url + path_and_query, credential=credential)
