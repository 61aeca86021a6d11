"""The real Claude Code CLI, configured by buzz's own install script, talks through buzz.

`make install-test` installs `@anthropic-ai/claude-code` from npm into `.ci/node-tools` (never
globally). Here a temporary HOME is configured by `curl …/sh/claudecode.sh | sh -s -- --key KEY`,
then `claude -p` runs with nothing of ours in its environment but HOME: the settings.json the
script wrote is all that sends it to buzz, which forwards to the fake Anthropic upstream.

To see the client's own bytes, the script is fetched through a wire tap: a plain TCP relay in
front of buzz that keeps a copy of everything clients send. The script is rendered with the
address it was fetched from, so Claude Code is configured to go through the tap too, and what
it sent can be compared byte for byte with what reached the upstream.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes.anthropic_replies import DEFAULT_TEXT_PIECES
from fakes.fake_anthropic import FakeAnthropic, RecordedRequest, fake_usage
from support import UPSTREAM_KEY, BuzzProcess

CLAUDE = Path(__file__).resolve().parents[1] / ".ci" / "node-tools" / "node_modules" / ".bin" / "claude"
# What the install script may use (and nothing else: no npm, so it cannot install anything).
TOOLS = ("sh", "node", "curl", "sed", "cp", "stty", "cat", "env", "chmod")
# Headers buzz replaces or drops by design; every other one must arrive exactly as sent.
HOP_OR_CREDENTIAL = {b"host", b"content-length", b"authorization", b"x-api-key", b"connection", b"keep-alive"}


@dataclass(frozen=True, slots=True)
class ClientRequest:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key.lower() == name), None)


class WireTap:
    """A TCP relay to `port` that keeps a copy of every byte clients send through it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sent: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="wire-tap", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self._port))
            copy = bytearray()
            with self._lock:
                self._sent.append(copy)
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, copy), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, copy: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if copy is not None:
                    with self._lock:
                        copy += data
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def requests(self) -> list[ClientRequest]:
        """Every HTTP/1.1 request clients sent, connection by connection, in order."""
        with self._lock:
            streams = [bytes(copy) for copy in self._sent]
        return [request for stream in streams for request in _parse_requests(stream)]

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
        self._thread.join(timeout=5)


def _parse_requests(stream: bytes) -> Iterator[ClientRequest]:
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        request_line, *lines = head.split(b"\r\n")
        method, target, _ = request_line.decode("latin-1").split(" ")
        headers = [(name, value.strip()) for name, _, value in (line.partition(b":") for line in lines)]
        fields = {name.lower(): value for name, value in headers}
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            body = bytearray()
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body += rest[:size]
                rest = rest[size + 2 :]
                if size == 0:
                    break
            yield ClientRequest(method, target, headers, bytes(body))
        else:
            length = int(fields.get(b"content-length", b"0"))
            yield ClientRequest(method, target, headers, rest[:length])
            rest = rest[length:]
        stream = rest


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    if not CLAUDE.exists():
        pytest.fail(f"Claude Code is not installed at {CLAUDE}: `make install-test` installs it from npm")
    with BuzzProcess(tmp_path_factory.mktemp("claude-code") / "data", fake_session.url) as process:
        yield process


@pytest.fixture
def tap(gateway: BuzzProcess) -> Iterator[WireTap]:
    wire = WireTap(gateway.port)
    yield wire
    wire.close()


def _path_with(tools_dir: Path) -> str:
    tools_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed for this test"
        (tools_dir / tool).symlink_to(found)
    (tools_dir / "claude").symlink_to(CLAUDE)
    return str(tools_dir)


def _messages_requests(fake: FakeAnthropic) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/v1/messages"]


@pytest.mark.timeout(180)
def test_claude_code_configured_by_the_script_runs_through_buzz(
    tmp_path: Path, gateway: BuzzProcess, fake: FakeAnthropic, tap: WireTap
) -> None:
    key = gateway.create_key(project="claude-code-e2e")
    home = tmp_path / "home"
    home.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = _path_with(tmp_path / "bin")

    # 1. The one-line install, exactly as a developer would type it (claude is already on PATH).
    install = subprocess.run(
        ["sh", "-c", f"curl -fsSL {tap.url}/sh/claudecode.sh | sh -s -- --key {key}"],
        env={"HOME": str(home), "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert install.returncode == 0, install.stderr
    assert "installing Claude Code" not in install.stderr
    settings = json.loads((home / ".claude" / "settings.json").read_text())
    assert settings == {"env": {"ANTHROPIC_BASE_URL": tap.url, "ANTHROPIC_AUTH_TOKEN": key}}
    # The script checked the key with buzz alone (GET /api/key): no vendor was asked, no row kept.
    assert fake.requests == []
    assert [request.target for request in tap.requests()] == ["/sh/claudecode.sh", "/api/key"]
    sent_before = len(tap.requests())

    # 2. Claude Code, with no ANTHROPIC_* variable of ours: only the settings file points it at buzz.
    env = {"HOME": str(home), "PATH": path, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    run = subprocess.run(
        ["claude", "-p", "say hi", "--output-format", "json"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    output: dict[str, Any] = json.loads(run.stdout)
    assert output["is_error"] is False and output["subtype"] == "success"
    assert output["result"] == "".join(DEFAULT_TEXT_PIECES)  # the fake upstream's answer, relayed

    # 3. What Claude Code sent is what the upstream received, byte for byte. (It also opens with
    # `HEAD /` to warm its connection; buzz answers that itself.) Paired by content, not by order,
    # in case Claude Code sends requests in parallel.
    unmatched = [r for r in tap.requests()[sent_before:] if r.target.startswith("/v1/")]
    received = fake.requests
    assert received, "nothing reached the upstream"
    for upstream in received:
        target = upstream.path + (f"?{upstream.query_string}" if upstream.query_string else "")
        same = (upstream.method, target, upstream.body)
        client = next((c for c in unmatched if (c.method, c.target, c.body) == same), None)
        assert client is not None, f"{upstream.method} {target} reached the upstream, but no client sent it so"
        unmatched.remove(client)
        kept = [(n.lower(), v) for n, v in client.headers if n.lower() not in HOP_OR_CREDENTIAL]
        arrived = [(n.lower(), v) for n, v in upstream.raw_headers if n.lower() not in HOP_OR_CREDENTIAL]
        assert arrived == kept
        # The key from settings.json reached buzz; only buzz's own credential reached the upstream.
        assert client.header(b"authorization") == f"Bearer {key}".encode()
        assert upstream.header("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert key.encode() not in upstream.raw_head + upstream.body
    assert unmatched == [], "sent by Claude Code but never forwarded"

    # The conversation turn itself: a streamed Messages call with Claude Code's whole context.
    turns = [r for r in _messages_requests(fake) if b'"tools"' in r.body]
    assert len(turns) == 1, [(r.method, r.path, len(r.body)) for r in received]
    turn = turns[0]
    assert turn.query_string == "beta=true"
    body = turn.json()
    assert body["stream"] is True
    assert isinstance(body["model"], str) and body["model"].startswith("claude-")
    assert isinstance(body["system"], list) and body["system"]
    assert isinstance(body["tools"], list) and len(body["tools"]) > 5
    assert any(m["role"] == "user" and "say hi" in json.dumps(m) for m in body["messages"])
    assert len(turn.body) > 20_000  # tens of KB: system prompt and tool definitions
    betas = (turn.header("anthropic-beta") or "").split(",")
    assert "claude-code-20250219" in betas and len(betas) >= 4
    assert turn.header("anthropic-version") == "2023-06-01"
    assert (turn.header("user-agent") or "").startswith("claude-cli/")

    # 4. One ledger row per forwarded request; the turn's has the model Claude Code asked for and
    # the tokens the upstream reported (the fake counts them from the body's length).
    usage = fake_usage(turn.body)
    rows = gateway.ledger(count=len(received), where=lambda r: r["project"] == "claude-code-e2e")
    assert len(rows) == len(received) and all(r["status"] == 200 for r in rows)
    [row] = [r for r in rows if r["input_tokens"] == usage["input_tokens"]]
    assert row["model"] == body["model"]
    assert row["input_tokens"] == usage["input_tokens"] == max(1, len(turn.body) // 4)
    assert row["output_tokens"] == 5
    assert row["cache_write_5m_tokens"] == usage["cache_creation"]["ephemeral_5m_input_tokens"]
    assert row["cache_write_1h_tokens"] == usage["cache_creation"]["ephemeral_1h_input_tokens"]
    assert row["usage_source"] == "reported"
    assert row["cost_nanos"] > 0
    # Claude Code saw the same usage that was billed.
    assert output["usage"]["input_tokens"] == row["input_tokens"]
    assert output["usage"]["output_tokens"] == row["output_tokens"]
