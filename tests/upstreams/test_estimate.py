"""Token estimates: the real OpenAI encodings offline, ~4 characters a token for everyone else."""

from __future__ import annotations

import json

import pytest

from buzz.upstreams import estimate


@pytest.mark.parametrize(
    ("provider", "model", "encoding"),
    [
        ("openai", "gpt-4o", "o200k_base"),
        ("openai", "gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai", "gpt-4.1", "o200k_base"),
        ("openai", "gpt-5.5", "o200k_base"),
        ("openai", "gpt-5.6-sol", "o200k_base"),
        ("openai", "o3", "o200k_base"),
        ("openai", "o4-mini", "o200k_base"),
        ("openai", "gpt-oss-120b", "o200k_base"),
        ("openai", "GPT-5", "o200k_base"),
        ("openai", "gpt-4", "cl100k_base"),
        ("openai", "gpt-4-turbo", "cl100k_base"),
        ("openai", "gpt-3.5-turbo", "cl100k_base"),
        ("openai", "text-embedding-3-small", "cl100k_base"),
        ("openai", "omni-moderation-latest", None),
        ("openai", "whisper-1", None),
        ("xai", "grok-4.3", None),
        ("google", "gemini-2.5-pro", None),
        ("anthropic", "claude-sonnet-4-6", None),
        ("google", "gpt-4o", None),  # only OpenAI serves OpenAI's tokenizer
    ],
)
def test_encoding_for(provider: str, model: str, encoding: str | None) -> None:
    assert estimate.encoding_for(provider, model) == encoding


@pytest.mark.parametrize(
    ("text", "o200k", "cl100k"),
    [
        # counts cross-checked against an independent implementation of tiktoken's BPE
        ("Hello", 1, 1),
        ("Be terse.\nHello", 4, 4),
        ("The food was delicious and the waiter was friendly.", 10, 10),
        ("日本語のテキストです", 7, 9),  # the 4-characters rule would say 3
    ],
)
def test_openai_counts_are_exact(text: str, o200k: int, cl100k: int) -> None:
    assert estimate.count_tokens(text, "openai", "gpt-5.5") == o200k
    assert estimate.count_tokens(text, "openai", "gpt-4") == cl100k


def test_other_vendors_use_four_characters_a_token() -> None:
    assert estimate.count_tokens("日本語のテキストです", "google", "gemini-2.5-pro") == 3  # ceil(10 / 4)
    assert estimate.count_tokens("abcd", "xai", "grok-4.3") == 1
    assert estimate.count_tokens("abcde", "anthropic", "claude-opus-4-8") == 2
    assert estimate.count_tokens("", "openai", "gpt-5.5") == 0
    assert [estimate.approximate_tokens(n) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_warm_up_is_harmless() -> None:
    estimate.warm_up()
    estimate.warm_up(["no-such-encoding"])  # a tokenizer fault never escapes


def test_unknown_encoding_falls_back_to_the_approximation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate, "encoding_for", lambda provider, model: "no-such-encoding")
    assert estimate.count_tokens("日本語のテキストです", "openai", "gpt-5.5") == 3


def test_prompt_tokens_reads_only_prompt_text() -> None:
    body = json.dumps(
        {
            "model": "gpt-5.5",
            "messages": [
                {"role": "developer", "content": "Be terse."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hello"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}},
                    ],
                },
            ],
            "temperature": 0.2,
            "user": "someone-with-a-long-identifier",
            "stream": True,
        }
    ).encode()
    # o200k_base "Be terse.\nHello" = 4, plus 2 messages x 3 framing + 3 reply priming
    assert estimate.prompt_tokens(body, "openai", "gpt-5.5") == 4 + 2 * 3 + 3


def test_prompt_tokens_of_a_tool_round_trip() -> None:
    body = json.dumps(
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "call_1", "function": {"arguments": "Hello"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Hello"},
            ]
        }
    ).encode()
    assert estimate.prompt_tokens(body, "openai", "gpt-5.5") == 3 + 2 * 3 + 3  # "Hello", "\n", "Hello"


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"text"'])
def test_prompt_tokens_of_something_else_counts_bytes(body: bytes) -> None:
    assert estimate.prompt_tokens(body, "openai", "gpt-5.5") == estimate.approximate_tokens(len(body))


@pytest.mark.parametrize(
    ("chars", "pieces", "tokens"),
    [(0, 0, 0), (40, 10, 10), (400, 10, 100), (3, 1, 1)],
)
def test_output_tokens(chars: int, pieces: int, tokens: int) -> None:
    assert estimate.output_tokens(chars, pieces) == tokens


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (("rate_limit_exceeded",), "rate_limit_exceeded"),
        (("RESOURCE_EXHAUSTED",), "RESOURCE_EXHAUSTED"),
        ((None, 429, "server_error"), "server_error"),
        (("Rate limit reached!", "rate_limit_exceeded"), "rate_limit_exceeded"),
        (("x" * 65,), None),
        (("",), None),
        ((429,), None),
        (("model-not-found",), None),
    ],
)
def test_error_type(candidates: tuple[object, ...], expected: str | None) -> None:
    assert estimate.error_type(*candidates) == expected
