"""Which headers cross buzz: everything end to end, nothing hop-by-hop, never the client's key."""

from __future__ import annotations

from buzz.proxy.headers import client_response_headers, upstream_request_headers


def test_request_headers_lose_hop_by_hop_ones_and_the_client_key() -> None:
    client = [
        (b"host", b"buzz.example"),
        (b"connection", b"keep-alive, x-trace-hop"),
        (b"connection", b"X-Other-Hop"),
        (b"x-trace-hop", b"1"),
        (b"x-other-hop", b"2"),
        (b"x-api-key", b"buzz-secret"),
        (b"x-buzz-tags", b"team=ml"),
        (b"content-length", b"12"),
        (b"anthropic-version", b"2023-06-01"),
        (b"anthropic-beta", b"a"),
        (b"anthropic-beta", b"b"),
    ]
    assert upstream_request_headers(client, ("x-api-key", "vendor-key")) == [
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "a"),
        ("anthropic-beta", "b"),
        ("x-api-key", "vendor-key"),
    ]
    # Gemini's ?key=: the credential is in the query, not in a header.
    assert upstream_request_headers([(b"authorization", b"Bearer k"), (b"accept", b"*/*")], None) == [("accept", "*/*")]


def test_request_headers_lose_every_credential_and_any_buzz_key() -> None:
    key = b"buzz-abcdefghijkl-" + b"A" * 32
    client = [
        (b"x-goog-api-key", b"g"),
        (b"api-key", b"azure"),
        (b"cookie", b"a=1"),
        (b"proxy-authorization", b"Basic x"),
        (b"authorization", b"Bearer " + key),
        (b"x-forwarded-key", b"copy of " + key),
        (b"user-agent", b"buzz-cli/1.0"),
    ]
    assert upstream_request_headers(client, ("x-goog-api-key", "vendor")) == [
        ("user-agent", "buzz-cli/1.0"),
        ("x-goog-api-key", "vendor"),
    ]


def test_response_headers_keep_their_case_and_lose_hop_by_hop_ones() -> None:
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"keep-alive, X-Up-Hop"),
        (b"Transfer-Encoding", b"chunked"),
        (b"x-up-hop", b"1"),
        (b"anthropic-ratelimit-requests-remaining", b"999"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    added = [(b"x-buzz-ratelimit-key-rpm-remaining", b"59")]
    assert client_response_headers(upstream, b"req_1", added) == [
        (b"Content-Type", b"application/json"),
        (b"anthropic-ratelimit-requests-remaining", b"999"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"x-buzz-request-id", b"req_1"),
        (b"x-buzz-ratelimit-key-rpm-remaining", b"59"),
    ]
