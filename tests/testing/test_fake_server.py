"""The vendor-neutral fake upstream machinery, and what every vendor fake shares through it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

import buzz
from fakes import fake_anthropic, fake_google, fake_openai, replies
from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_google import FakeGoogle
from fakes.fake_openai import FakeOpenAI, FakeXAI
from fakes.fake_server import FakeUpstream
from fakes.replies import Reply


def fetch(url: str, data: bytes = b"", headers: Mapping[str, str] | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    async def go() -> tuple[int, CIMultiDict[str], bytes]:
        async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=headers) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()

    return asyncio.run(go())


def test_default_reply_gets_the_raw_request() -> None:
    seen: list[tuple[str, str, str, str | None, bytes]] = []

    def answer(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Reply:
        seen.append((method, path, query, headers.get("X-SCENARIO"), body))
        return Reply(status=202, body=b"ok")

    with FakeUpstream(answer, "custom") as fake:
        status, headers, body = fetch(fake.url + "/a%2Fb?x=1&y=%20", data=b"raw", headers={"x-scenario": "s"})
        assert (status, body) == (202, b"ok")
        assert "request-id" not in headers and "x-request-id" not in headers  # no id unless configured
        assert seen == [("POST", "/a%2Fb", "x=1&y=%20", "s", b"raw")]
        assert fake.requests[0].path == "/a%2Fb" and fake.name == "custom"


def test_request_id_header_is_configurable() -> None:
    with FakeUpstream(lambda *_: Reply(body=b"{}"), request_id_header="x-trace", new_request_id=lambda: "t-1") as fake:
        assert fetch(fake.url)[1]["x-trace"] == "t-1"
        fake.enqueue(Reply(body=b"{}", add_request_id=False))
        assert "x-trace" not in fetch(fake.url)[1]
    with pytest.raises(ValueError, match="go together"):
        FakeUpstream(lambda *_: Reply(), request_id_header="x-trace")


def test_vendor_fakes_share_the_machinery() -> None:
    assert fake_anthropic.Reply is fake_openai.Reply is fake_google.Reply is replies.Reply
    for fake_type in (FakeAnthropic, FakeOpenAI, FakeXAI, FakeGoogle):
        assert issubclass(fake_type, FakeUpstream)
    with FakeAnthropic() as fake:
        assert fetch(fake.url + "/v1/messages/count_tokens", data=b"{}")[1]["request-id"].startswith("req_011C")
        assert fake.name == "anthropic"
        with pytest.raises(RuntimeError, match="FakeAnthropic already started"):
            fake.start()


def test_disconnect_times_on_any_fake() -> None:
    with FakeGoogle() as fake:
        fake.enqueue(Reply(hang=True))

        async def go() -> None:
            timeout = aiohttp.ClientTimeout(total=0.2)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                with pytest.raises(asyncio.TimeoutError):
                    await s.post(fake.url + "/v1/models/m:generateContent")

        asyncio.run(go())
        deadline = time.monotonic() + 2
        while not fake.disconnect_times() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.disconnect_times()) == 1


@pytest.mark.parametrize(
    ("module", "extra", "path", "expect"),
    [
        ("fakes.fake_openai", [], "/v1/chat/completions", b'"object":"chat.completion"'),
        ("fakes.fake_openai", ["--xai"], "/v1/models", b'"owned_by":"xai"'),
        ("fakes.fake_google", [], "/v1/models/gemini-2.5-flash:generateContent", b'"usageMetadata"'),
    ],
)
def test_standalone_cli(module: str, extra: list[str], path: str, expect: bytes) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(buzz.__file__).parents[1])}
    argv = [sys.executable, "-m", module, "--port", "0", "--workers", "2", *extra]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("fake ")
            url = line.split()[-1]
            method = "GET" if path.endswith("/models") else "POST"

            async def go() -> tuple[int, bytes]:
                async with aiohttp.ClientSession() as s, s.request(method, url + path, json={"model": "m"}) as resp:
                    return resp.status, await resp.read()

            status, body = asyncio.run(go())
            assert status == 200 and expect in body
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
