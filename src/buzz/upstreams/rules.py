"""Which vendor rules read usage for which endpoint: the meter's only vendor-specific choice."""

from __future__ import annotations

from buzz.routes import (
    BATCH_EMBED_CONTENTS,
    CHAT,
    EMBED_CONTENT,
    EMBEDDINGS,
    GENERATE,
    RESPONSES,
    STREAM_GENERATE,
    Endpoint,
)
from buzz.upstreams.anthropic import AnthropicUsage
from buzz.upstreams.base import NoUsage, UsageRules
from buzz.upstreams.google import GeminiEmbedUsage, GeminiUsage
from buzz.upstreams.openai import ChatUsage, EmbeddingsUsage, ResponsesUsage


def usage_rules(endpoint: Endpoint, body: bytes, model: str, provider: str, ceiling: int | None = None) -> UsageRules:
    """`ceiling`: the most output the request allows (its max_tokens times the answers it asks for),
    which an estimate never exceeds."""
    if endpoint is CHAT:
        return ChatUsage(body, model, provider, ceiling)
    if endpoint is RESPONSES:
        return ResponsesUsage(body, model, provider, ceiling)
    if endpoint is EMBEDDINGS:
        return EmbeddingsUsage(body, model, provider)
    if endpoint is GENERATE or endpoint is STREAM_GENERATE:
        return GeminiUsage(body, model, provider, ceiling)
    if endpoint is EMBED_CONTENT or endpoint is BATCH_EMBED_CONTENTS:
        return GeminiEmbedUsage(body, model, provider)
    if not endpoint.billed:
        return NoUsage()  # its row carries no usage: nothing in the answer needs reading
    return AnthropicUsage(len(body), ceiling)
