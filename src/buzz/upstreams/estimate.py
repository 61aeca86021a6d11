"""Token estimates for what an upstream did not count for us, and the upstream error type rule.

An estimate is needed when a stream is cut before its usage arrives, or when an OpenAI chat
stream ends without usage because the client did not ask for `stream_options.include_usage`
(buzz does not add it by default: that would change the request).

Counting: OpenAI models are counted with their real BPE encoding (o200k_base for gpt-4o,
gpt-4.1, gpt-5*, o1/o3/o4 and gpt-oss; cl100k_base for gpt-4, gpt-3.5 and the text-embedding
models) through `toktok` (PyPI `toktok-rs`), whose vocabularies are compiled into its extension,
so nothing is downloaded at run time. `tiktoken` itself fetches its BPE files from the internet on
first use. An encoding is loaded on its first use and kept by `toktok` for the life of the process
(o200k_base: about 0.4 s and 64 MB; `warm_up` does it ahead of time). Claude, Gemini and Grok
publish no offline tokenizer, so they, and OpenAI ids of no known encoding, use the usual
approximation of about 4 characters a token, which is close for English and code and counts
too few for languages written without spaces (CJK).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from buzz.upstreams.anthropic import safe_error_type

_CHARS_PER_TOKEN = 4
# Per message, OpenAI's chat format adds a few tokens of framing (role and separators; OpenAI's
# cookbook counts 3, plus 3 to prime the reply). Other vendors frame similarly; it is an estimate.
_TOKENS_PER_MESSAGE = 3
_REPLY_PRIMING_TOKENS = 3

# The parts of a request body that reach the model as text. Everything else (sampling options,
# ids, stream flags) is metadata, and counting it would overestimate.
_PROMPT_KEYS = frozenset(
    {
        "messages",  # chat completions
        "input",  # responses, embeddings
        "instructions",  # responses
        "prompt",  # legacy completions
        "contents",  # gemini
        "systemInstruction",
        "system_instruction",
        "system",  # anthropic
        "tools",
        "functions",
    }
)
# Inside the prompt: keys whose strings are not text the model reads as tokens (media payloads,
# links, ids, enums). A base64 image counted as text would be billed as megatokens.
_SKIP_KEYS = frozenset(
    {
        "type",
        "role",
        "id",
        "call_id",
        "tool_call_id",
        "image_url",
        "url",
        "file_id",
        "file_data",
        "fileData",
        "inline_data",
        "inlineData",
        "input_audio",
        "audio",
        "data",
        "mime_type",
        "mimeType",
        "detail",
        "cache_control",
        "thoughtSignature",
        "thought_signature",
        "encrypted_content",
    }
)

_O200K = re.compile(r"(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-6|gpt-oss|chatgpt-|o[1-9](?:-|$)|codex-)")
_CL100K = re.compile(r"(?:gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada-002)")


def approximate_tokens(chars: int) -> int:
    """About 4 characters a token, rounded up: the documented rule when no tokenizer is known."""
    return -(-chars // _CHARS_PER_TOKEN) if chars > 0 else 0


def encoding_for(provider: str, model: str) -> str | None:
    """The BPE encoding of an OpenAI model id, or None when there is no offline tokenizer for it."""
    if provider != "openai":
        return None
    name = model.lower().removeprefix("openai/").removeprefix("ft:")
    if _O200K.match(name):
        return "o200k_base"
    if _CL100K.match(name):
        return "cl100k_base"
    return None


def _count(texts: list[str], encoding: str) -> int | None:
    try:
        import toktok  # a compiled extension: imported on first use only
    except ImportError:
        return None
    try:
        # threads=1: counting on the calling thread; a pool costs more than it saves here.
        return int(sum(toktok.batch_count(texts, encoding, threads=1)))
    except Exception:  # a tokenizer fault must cost an estimate its precision, not the request its row
        return None


def count_tokens(text: str, provider: str, model: str) -> int:
    """Tokens in `text` as `model` would count them: exact for OpenAI models, else ~4 chars a token."""
    if not text:
        return 0
    encoding = encoding_for(provider, model)
    if encoding is not None and (counted := _count([text], encoding)) is not None:
        return counted
    return approximate_tokens(len(text))


def warm_up(encodings: Iterable[str] = ("o200k_base",)) -> None:
    """Load the tokenizers now (e.g. at start-up, off the event loop) rather than on a first estimate."""
    for encoding in encodings:
        _count(["warm"], encoding)


def _collect(value: Any, texts: list[str]) -> int:
    """Append the text strings found in `value` to `texts`; return how many messages it holds."""
    messages = 0
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, list):
        for item in value:
            messages += _collect(item, texts)
    elif isinstance(value, dict):
        if "role" in value:
            messages += 1
        for key, item in value.items():
            if key not in _SKIP_KEYS:
                messages += _collect(item, texts)
    return messages


def prompt_tokens(body: bytes, provider: str, model: str) -> int:
    """An estimate of a request's input tokens from its JSON body (any vendor's request shape)."""
    try:
        doc = msgspec.json.decode(body)
        if not isinstance(doc, dict):
            return approximate_tokens(len(body))
        texts: list[str] = []
        messages = sum(_collect(value, texts) for key, value in doc.items() if key in _PROMPT_KEYS)
    except (msgspec.DecodeError, RecursionError):
        return approximate_tokens(len(body))  # not JSON, or nested past reading: every byte might be prompt
    framing = messages * _TOKENS_PER_MESSAGE + (_REPLY_PRIMING_TOKENS if messages else 0)
    return count_tokens("\n".join(texts), provider, model) + framing


def output_tokens(chars: int, pieces: int) -> int:
    """Output relayed as `pieces` deltas holding `chars` characters in all.

    OpenAI streams about one token a delta, so the delta count is close for it; vendors that send
    larger deltas (Gemini) are counted by length instead. Neither sees hidden reasoning tokens.
    """
    return max(pieces, approximate_tokens(chars))


def error_type(*candidates: object) -> str | None:
    """The first candidate that is a plain identifier (`rate_limit_exceeded`, `RESOURCE_EXHAUSTED`).

    Kept as sent; anything else (free text, numbers) is dropped. The character rule is Anthropic's
    `safe_error_type`, applied case-insensitively because Google's statuses are upper case.
    """
    for value in candidates:
        if isinstance(value, str) and safe_error_type(value.lower()) is not None:
            return value
    return None
