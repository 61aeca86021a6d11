"""The token counts buzz bills, in one vendor-neutral shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UsageSource = Literal["reported", "estimated", "none"]


@dataclass(slots=True)
class Usage:
    """Tokens of one request, each counted once.

    `input_tokens` is uncached input only (Anthropic's meaning): cache writes and reads are
    counted in their own fields, never inside it. Meters of vendors whose prompt count
    includes cached tokens (OpenAI, Gemini) subtract before filling this in.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def total_input_tokens(self) -> int:
        """All prompt tokens, cached or not; long-context price tiers are decided on this."""
        return self.input_tokens + self.cache_write_5m_tokens + self.cache_write_1h_tokens + self.cache_read_tokens

    def is_empty(self) -> bool:
        return not (
            self.input_tokens
            or self.output_tokens
            or self.cache_write_5m_tokens
            or self.cache_write_1h_tokens
            or self.cache_read_tokens
        )
