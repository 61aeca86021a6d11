"""docs/deploy.md's nginx configuration, exactly as written, with nginx terminating TLS in front of
a real `buzz serve`: a stream reaches the client event by event, its bytes the upstream's.

The upstream holds its last event behind a gate, so the client must receive the first ones while
the stream is still open: a buffering proxy would hold them until the end.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fakes.fake_anthropic import FakeAnthropic
from fakes.replies import Reply
from support import BuzzProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_deploy","type":"message",'
    b'"role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,'
    b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n',
    b'event: ping\ndata: {"type": "ping"}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def documented_block() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    found = re.search(r"<!-- nginx-begin.*?-->\s*```nginx\n(.*?)```\s*<!-- nginx-end -->", text, re.S)
    assert found is not None, "docs/deploy.md lost its nginx block"
    return found[1]


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def nginx_in_front(tmp_path: Path, fake_session: FakeAnthropic) -> Iterator[tuple[BuzzProcess, int, Path, str]]:
    if NGINX is None:
        pytest.skip("nginx is missing (apt-get install nginx-light)")
    with BuzzProcess(tmp_path / "data", fake_session.url) as buzz:
        token = buzz.create_key("acme")
        cert, key = _certificate(tmp_path)
        port = free_port()
        block = documented_block()
        for documented, ours in (
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{buzz.port};"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
            ("/etc/ssl/buzz/fullchain.pem", str(cert)),
            ("/etc/ssl/buzz/privkey.pem", str(key)),
        ):
            assert documented in block
            block = block.replace(documented, ours)
        temp = "\n".join(
            f"{name}_temp_path {tmp_path}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"daemon off;\nmaster_process off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\naccess_log off;\n{temp}\n{block}\n}}\n"
        )
        nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)], stderr=subprocess.PIPE)
        try:
            assert wait_until(lambda: _accepts(port) or nginx.poll() is not None, timeout=20)
            assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else b""
            yield buzz, port, cert, token
        finally:
            nginx.terminate()
            nginx.wait(timeout=20)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_stream_through_the_documented_nginx_arrives_event_by_event(
    nginx_in_front: tuple[BuzzProcess, int, Path, str], fake_session: FakeAnthropic
) -> None:
    buzz, port, cert, token = nginx_in_front
    last = threading.Event()
    fake_session.enqueue(Reply(chunks=EVENTS, gates=[None, None, last]))
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    body = b'{"model":"claude-haiku-4-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}'

    async def go() -> tuple[int, bytes, bytes]:
        context = ssl.create_default_context(cafile=str(cert))
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"https://127.0.0.1:{port}/v1/messages", data=body, headers=headers, ssl=context) as response,
        ):
            early = b""
            while len(early) < len(EVENTS[0] + EVENTS[1]):
                early += await response.content.readany()
            last.set()  # only now may the upstream send its last event
            rest = await response.content.read()
            return response.status, early, rest

    try:
        # A proxy that buffers holds even the headers here: bound the whole exchange.
        status, early, rest = asyncio.run(asyncio.wait_for(go(), timeout=20))
    finally:
        last.set()  # a failed read must not leave the upstream's reply waiting forever
    assert status == 200
    assert early == EVENTS[0] + EVENTS[1]  # before the stream could end: nothing was held back
    assert early + rest == b"".join(EVENTS)  # and every byte is the upstream's
    assert len(buzz.ledger(1)) == 1
