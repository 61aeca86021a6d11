"""The allow-list's scan of streamed uploads: the models a body names, however its JSON is written
and however it is split into chunks."""

from __future__ import annotations

import pytest

from buzz.proxy.upload import ModelScan

LONG = b"x" * 200_000  # longer than any token the scan carries from one chunk to the next
CASES = [
    (b'{"model":"claude-opus", "x":"\\"model\\":\\"evil\\"", "model" : "b"}', ["claude-opus", "b"]),
    (b'{"model":"claude-opus\\u002d4-1"}', ["claude-opus-4-1"]),
    (b'{"mod\\u0065l":"sneaky"}', ["sneaky"]),
    (b'{"model"' + b" " * 200 + b":" + b"\n" * 100 + b'"spaced"}', ["spaced"]),
    (
        b'{"requests":[{"params":{"model":"m1","messages":[{"content":"' + LONG + b'"}]}},{"params":{"model":"m2"}}]}',
        ["m1", "m2"],
    ),
    (b'{"model": 5, "other": "not a model"}', []),
    (b'{"a":"\\\\", "model":"after a backslash"}', ["after a backslash"]),
    (b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n{"body":{"model":"in a file"}}\n--b--', ["in a file"]),
]


@pytest.mark.parametrize(("body", "named"), CASES)
@pytest.mark.parametrize("size", [1, 2, 7, 64, 65536, 10**9])
def test_every_model_named_is_seen_whatever_the_chunks(body: bytes, named: list[str], size: int) -> None:
    seen: list[str] = []
    scan = ModelScan(seen.append)
    for start in range(0, len(body), size):
        scan(body[start : start + size])
    assert seen == named
