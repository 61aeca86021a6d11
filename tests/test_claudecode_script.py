"""`curl -fsSL …/sh/claudecode.sh | sh`, run for real in a temporary HOME against a running buzz."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post

# The script may use only these; PATH is built from them, so "npm missing" really is missing.
TOOLS = ("sh", "node", "curl", "sed", "cp", "stty", "cat", "env", "chmod")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    with BuzzProcess(tmp_path_factory.mktemp("cc") / "data", fake_session.url) as process:
        yield process


class Machine:
    """A temporary HOME and a PATH with exactly the tools given."""

    def __init__(self, root: Path, gateway: BuzzProcess, claude: bool = True, npm: bool = False) -> None:
        self.home = root / "home"
        self.home.mkdir()
        self.bin = root / "bin"
        self.bin.mkdir()
        self.gateway = gateway
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is needed for these tests"
            (self.bin / tool).symlink_to(found)
        if claude:
            self._stub("claude", "echo 'claude stub'")
        if npm:
            # Records how it was called and installs a `claude` stub, as the real package would.
            self._stub("npm", f'echo "$@" >> "{root}/npm-calls"; printf "#!/bin/sh\\n" > "{self.bin}/claude"; '
                       f'chmod +x "{self.bin}/claude"')  # fmt: skip
        self.settings = self.home / ".claude" / "settings.json"

    def _stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def run(self, *args: str, key_env: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(self.home), "PATH": str(self.bin)}
        if key_env is not None:
            env["BUZZ_API_KEY"] = key_env
        command = f"curl -fsSL {self.gateway.url}/sh/claudecode.sh | sh -s -- {' '.join(args)}"
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)

    def read(self) -> dict[str, object]:
        return json.loads(self.settings.read_text())


@pytest.fixture
def key(gateway: BuzzProcess) -> str:
    return gateway.create_key(project="claude-code")


def test_script_is_served_with_the_gateway_address(gateway: BuzzProcess) -> None:
    assert raw_post(gateway.url, "/sh/claudecode.sh", b"", {})[0] == 404  # GET only
    result = subprocess.run(["curl", "-fsS", f"{gateway.url}/sh/claudecode.sh"], capture_output=True, text=True)
    assert result.stdout.startswith("#!/bin/sh")
    assert f"BUZZ_URL='{gateway.url}'" in result.stdout
    assert "__BUZZ_URL__" not in result.stdout
    # What it will do is said before it does it, in the script's own opening lines.
    assert "What this script does" in "\n".join(result.stdout.splitlines()[:6])
    hostile = ["-H", "host: x';rm -rf ~;'"]  # a Host header must never become shell syntax
    injected = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *hostile, f"{gateway.url}/sh/claudecode.sh"],
        capture_output=True,
        text=True,
    )
    assert injected.stdout == "400"


def test_fresh_install_writes_a_private_settings_file(tmp_path: Path, gateway: BuzzProcess, key: str) -> None:
    machine = Machine(tmp_path, gateway)
    result = machine.run("--key", key)
    assert result.returncode == 0, result.stderr
    assert machine.read() == {"env": {"ANTHROPIC_BASE_URL": gateway.url, "ANTHROPIC_AUTH_TOKEN": key}}
    assert machine.settings.stat().st_mode & 0o777 == 0o600
    assert "undo with:" in result.stderr and "--uninstall" in result.stderr
    assert key not in result.stderr  # the secret is never echoed whole


def test_existing_settings_are_merged_backed_up_and_kept_private(
    tmp_path: Path, gateway: BuzzProcess, key: str
) -> None:
    machine = Machine(tmp_path, gateway)
    machine.settings.parent.mkdir()
    original = {"theme": "dark", "permissions": {"allow": ["Bash(ls)"]}, "env": {"FOO": "bar"}}
    machine.settings.write_text(json.dumps(original))
    machine.settings.chmod(0o640)
    assert machine.run(key_env=key).returncode == 0  # the key from BUZZ_API_KEY
    merged = machine.read()
    assert merged["theme"] == "dark" and merged["permissions"] == {"allow": ["Bash(ls)"]}
    assert merged["env"] == {"FOO": "bar", "ANTHROPIC_BASE_URL": gateway.url, "ANTHROPIC_AUTH_TOKEN": key}
    assert machine.settings.stat().st_mode & 0o777 == 0o640
    backup = machine.settings.with_name("settings.json.buzz-backup")
    assert json.loads(backup.read_text()) == original

    before = (machine.settings.read_bytes(), machine.settings.stat().st_mtime_ns)
    again = machine.run("--key", key)
    assert again.returncode == 0 and "nothing changed" in again.stderr
    assert (machine.settings.read_bytes(), machine.settings.stat().st_mtime_ns) == before

    undone = machine.run("--uninstall")
    assert undone.returncode == 0, undone.stderr
    assert machine.read() == original
    assert not machine.settings.with_name("buzz-install.json").exists()


def test_uninstall_of_a_file_it_created_removes_it(tmp_path: Path, gateway: BuzzProcess, key: str) -> None:
    machine = Machine(tmp_path, gateway)
    assert machine.run("--key", key).returncode == 0
    assert machine.run("--uninstall").returncode == 0
    assert not machine.settings.exists()
    assert "nothing to undo" in machine.run("--uninstall").stderr


def test_dry_run_touches_nothing(tmp_path: Path, gateway: BuzzProcess, key: str) -> None:
    machine = Machine(tmp_path, gateway, claude=False, npm=True)
    result = machine.run("--key", key, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would change" in result.stderr and "ANTHROPIC_BASE_URL" in result.stderr
    assert "would install Claude Code" in result.stderr
    assert not machine.settings.exists()
    assert not (tmp_path / "npm-calls").exists()


def test_wrong_key_is_refused_before_anything_is_written(tmp_path: Path, gateway: BuzzProcess) -> None:
    machine = Machine(tmp_path, gateway, claude=False, npm=True)
    result = machine.run("--key", "buzz-aaaaaaaaaaaa-" + "A" * 32)
    assert result.returncode != 0
    assert "refused this key" in result.stderr and "nothing was changed" in result.stderr
    assert not machine.settings.parent.exists()
    assert not (tmp_path / "npm-calls").exists()
    assert "not a buzz key" in machine.run("--key", "sk-ant-api03-xyz").stderr


def test_installs_claude_code_with_npm_when_missing(tmp_path: Path, gateway: BuzzProcess, key: str) -> None:
    machine = Machine(tmp_path, gateway, claude=False, npm=True)
    result = machine.run("--key", key)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "npm-calls").read_text().split() == ["install", "-g", "@anthropic-ai/claude-code"]
    assert machine.read()["env"]["ANTHROPIC_AUTH_TOKEN"] == key  # type: ignore[index]


def test_npm_missing_says_what_to_install(tmp_path: Path, gateway: BuzzProcess, key: str) -> None:
    machine = Machine(tmp_path, gateway, claude=False, npm=False)
    result = machine.run("--key", key)
    assert result.returncode != 0
    assert "npm is missing" in result.stderr and "Node.js" in result.stderr
    assert not machine.settings.exists()


def test_public_url_setting_is_used(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    process = BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_PUBLIC_URL": "https://buzz.example.test/"})
    with process:
        text = subprocess.run(
            ["curl", "-fsS", f"{process.url}/sh/claudecode.sh"], capture_output=True, text=True, check=True
        ).stdout
        assert "BUZZ_URL='https://buzz.example.test'" in text


def test_the_script_is_posix_sh(gateway: BuzzProcess, tmp_path: Path) -> None:
    text = subprocess.run(["curl", "-fsS", f"{gateway.url}/sh/claudecode.sh"], capture_output=True, text=True).stdout
    script = tmp_path / "claudecode.sh"
    script.write_text(text)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(script)]).returncode == 0
    assert os.access(shutil.which("sh") or "/bin/sh", os.X_OK)


def _fetch(url: str, *headers: str) -> tuple[str, dict[str, str]]:
    args = [part for header in headers for part in ("-H", header)]
    result = subprocess.run(
        ["curl", "-sS", "-D", "-", *args, f"{url}/sh/claudecode.sh"], capture_output=True, text=True
    )
    head, _, body = result.stdout.partition("\n\n")  # text mode turned each CRLF into LF
    fields = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    return body, {name.lower(): value for name, value in fields.items()}


def test_a_script_made_from_request_headers_is_never_cached_for_others(gateway: BuzzProcess) -> None:
    """Without BUZZ_PUBLIC_URL the address comes from the request: a shared cache must not keep it,
    and forwarded headers from a client that is not a trusted proxy are ignored."""
    body, headers = _fetch(gateway.url, "host: evil.example", "x-forwarded-proto: https", "x-forwarded-host: x.example")
    assert headers["cache-control"] == "private, no-store"
    assert "BUZZ_URL='http://evil.example'" in body  # its own Host, for itself alone; the forwarded ones ignored


def test_forwarded_headers_count_only_from_trusted_proxies(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    env = {"BUZZ_TRUSTED_PROXIES": "127.0.0.0/8"}
    with BuzzProcess(tmp_path / "data", fake_session.url, env=env) as process:
        body, headers = _fetch(process.url, "x-forwarded-proto: https", "x-forwarded-host: gw.example.com")
    assert "BUZZ_URL='https://gw.example.com'" in body and headers["cache-control"] == "private, no-store"


def test_with_a_public_url_only_that_address_is_used(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    env = {"BUZZ_PUBLIC_URL": "https://buzz.example.com"}
    with BuzzProcess(tmp_path / "data", fake_session.url, env=env) as process:
        body, headers = _fetch(process.url, "host: evil.example", "x-forwarded-proto: http")
    assert "BUZZ_URL='https://buzz.example.com'" in body and "evil" not in body
    assert headers["cache-control"] == "public, max-age=300"
