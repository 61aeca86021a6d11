"""Every vendor buzz reaches, and everything buzz knows about each, in one frozen record apiece.

Adding a vendor is adding one `Provider` to `REGISTRY`: the configuration (its table, its
credential variable, its base URL variable), routing (its model patterns, its OpenAI-compatible
path, its native API), pricing (its genai-prices id), the model lists (its list path and shape,
its `owned_by`) and the public pages (its display name) all read it from here.

This module imports nothing of buzz's, so every layer may read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

ListShape = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Provider:
    name: str  # buzz's id: the config table, `[routing]` values, the ledger's `provider`
    display_name: str  # as people write it: error messages, the public model page
    credential_env: str  # the variable the vendor's own SDK reads, so an operator's shell has it
    default_base_url: str
    # Where the vendor serves the OpenAI wire format, under its base URL: `/v1/chat/completions`
    # becomes `{base}{openai_prefix}/chat/completions`.
    openai_prefix: str
    # Its own model list under its base URL, in `list_shape`, read for the OpenAI surface's list
    # with buzz's key in `list_key_header` (as a Bearer token in `authorization`), plus `list_headers`.
    models_path: str
    list_shape: ListShape
    price_id: str  # genai-prices' provider id
    patterns: tuple[str, ...]  # model ids (globs, lowercase) routed to it
    owned_by: str  # `owned_by` of its models in OpenAI-shaped lists
    # The client API that speaks this vendor's own format (a `Surface` value), if buzz serves one;
    # that surface reaches this vendor only.
    native_surface: str | None = None
    # Headers its native API takes a key in. buzz puts the upstream key where the client put
    # its own when that place is one of these, and in the first otherwise.
    native_key_headers: tuple[str, ...] = ()
    native_query_key: bool = False  # its native API also takes the key as `?key=`
    list_key_header: str = "authorization"
    list_headers: tuple[tuple[str, str], ...] = ()
    # A prefix its model list puts before ids that requests do not use (Google's `models/`).
    listed_id_prefix: str = ""

    @property
    def base_url_env(self) -> str:
        return f"BUZZ_{self.name.upper()}_BASE_URL"

    def list_request_headers(self, key: str) -> dict[str, str]:
        """The headers of a GET of its model list with the upstream key `key`."""
        credential = f"Bearer {key}" if self.list_key_header == "authorization" else key
        return {"accept": "application/json", self.list_key_header: credential, **dict(self.list_headers)}


REGISTRY: tuple[Provider, ...] = (
    Provider(
        name="anthropic",
        display_name="Anthropic",
        credential_env="ANTHROPIC_API_KEY",
        default_base_url="https://api.anthropic.com",
        openai_prefix="/v1",
        models_path="/v1/models",
        list_shape="anthropic",
        price_id="anthropic",
        patterns=("claude-*",),
        owned_by="anthropic",
        native_surface="anthropic",
        native_key_headers=("x-api-key", "authorization"),
        list_key_header="x-api-key",
        list_headers=(("anthropic-version", "2023-06-01"),),
    ),
    Provider(
        name="openai",
        display_name="OpenAI",
        credential_env="OPENAI_API_KEY",
        default_base_url="https://api.openai.com/v1",
        openai_prefix="",
        models_path="/models",
        list_shape="openai",
        price_id="openai",
        # `ft:*`: an account's fine-tunes (`ft:gpt-4.1:acme:support:xyz`), which only OpenAI serves.
        patterns=("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "text-embedding-*", "ft:*"),
        owned_by="openai",
    ),
    Provider(
        name="google",
        display_name="Google",
        credential_env="GEMINI_API_KEY",
        default_base_url="https://generativelanguage.googleapis.com",
        openai_prefix="/v1beta/openai",
        models_path="/v1beta/openai/models",
        list_shape="openai",
        price_id="google",
        patterns=("gemini-*",),
        owned_by="google",
        native_surface="gemini",
        native_key_headers=("x-goog-api-key",),
        native_query_key=True,
        listed_id_prefix="models/",
    ),
    Provider(
        name="xai",
        display_name="xAI",
        credential_env="XAI_API_KEY",
        default_base_url="https://api.x.ai/v1",
        openai_prefix="",
        models_path="/models",
        list_shape="openai",
        price_id="x-ai",
        patterns=("grok-*",),
        owned_by="xai",
    ),
)

BY_NAME: Mapping[str, Provider] = MappingProxyType({provider.name: provider for provider in REGISTRY})
NAMES: tuple[str, ...] = tuple(BY_NAME)
# The vendor each native surface reaches, by `Surface` value.
NATIVE: Mapping[str, Provider] = MappingProxyType(
    {provider.native_surface: provider for provider in REGISTRY if provider.native_surface is not None}
)


def get(name: str) -> Provider:
    """The provider called `name`; KeyError for a name buzz does not know."""
    return BY_NAME[name]
