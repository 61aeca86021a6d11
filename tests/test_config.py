"""Configuration precedence: defaults < file < environment < flags; bad values are fatal."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from buzz import providers
from buzz.config import SETTINGS, ConfigError, load

FILE = """
[server]
port = 9000
data_dir = "/srv/buzz"
max_body_bytes = 1048576

[upstream]
read_timeout = 120

[pricing]
discount = "0.25"

[pricing.models."claude-opus-4-8"]
input = "4.00"
output = "20"

[providers.anthropic]
base_url = "https://eu.example.test/"
api_key = "sk-from-file"
"""


def test_defaults() -> None:
    config = load(None, env={})
    assert (config.host, config.port, config.max_body_bytes) == ("127.0.0.1", 8080, 32 * 1024 * 1024)
    assert config.provider("anthropic").base_url == "https://api.anthropic.com"
    assert config.provider("anthropic").api_key is None
    assert config.provider("openai").base_url == "https://api.openai.com/v1"
    assert config.discount == Decimal(0)


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "buzz.toml"
    path.write_text(FILE)
    from_file = load(path, env={})
    assert (from_file.port, str(from_file.data_dir), from_file.read_timeout) == (9000, "/srv/buzz", 120.0)
    assert from_file.provider("anthropic").base_url == "https://eu.example.test"
    assert from_file.provider("anthropic").api_key == "sk-from-file"
    assert from_file.discount == Decimal("0.25")
    assert from_file.price_overrides["claude-opus-4-8"].input == Decimal("4.00")

    env = {
        "BUZZ_PORT": "9100",
        "ANTHROPIC_API_KEY": "sk-from-env",
        "BUZZ_ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
    }
    from_env = load(path, env=env)
    assert from_env.port == 9100
    assert from_env.provider("anthropic").api_key == "sk-from-env"
    assert from_env.provider("anthropic").base_url == "http://127.0.0.1:1"

    assert load(path, env=env, flags={"port": 9200, "host": None}).port == 9200
    assert load(None, env={"BUZZ_CONFIG": str(path)}).port == 9000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key server.prot"),
        ("[srever]\nport = 1\n", "unknown table [srever]"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[pricing]\ndiscount = "1.5"\n', "pricing.discount"),
        ("[providers.mistral]\napi_key = 'x'\n", "unknown provider"),
        ("[pricing.models.m]\nimput = 1\n", "unknown key pricing.models.m.imput"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_files_are_fatal(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "buzz.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load(path, env={})


def test_bad_environment_values_are_fatal() -> None:
    with pytest.raises(ConfigError, match="BUZZ_PORT"):
        load(None, env={"BUZZ_PORT": "eighty"})
    with pytest.raises(ConfigError, match="BUZZ_READ_TIMEOUT"):
        load(None, env={"BUZZ_READ_TIMEOUT": "-1"})
    with pytest.raises(ConfigError, match="does not exist"):
        load(Path("/nonexistent/buzz.toml"), env={})


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for setting in SETTINGS:
        table, key = setting.file_key
        assert f"`{table}.{key}`" in readme, setting.name
        assert f"`{setting.env}`" in readme, setting.env
    for provider in providers.REGISTRY:
        assert f"`{provider.credential_env}`" in readme
        assert f"`{provider.base_url_env}`" in readme


def test_workers_are_a_count_or_one_per_core() -> None:
    assert load(None, env={}).workers == 1
    assert load(None, env={"BUZZ_WORKERS": "3"}).workers == 3
    assert load(None, env={"BUZZ_WORKERS": "auto"}).workers == len(os.sched_getaffinity(0))
    assert load(None, env={"BUZZ_WORKERS": "2"}, flags={"workers": "AUTO"}).workers == len(os.sched_getaffinity(0))
    for bad in ("0", "-2", "many"):
        with pytest.raises(ConfigError, match="is not valid"):
            load(None, env={"BUZZ_WORKERS": bad})
    with pytest.raises(ConfigError, match="--workers: 'none' is not valid"):
        load(None, env={}, flags={"workers": "none"})


POOL = """
[[providers.anthropic.credentials]]
name = "acct-a"
api_key = "sk-ant-a"
weight = 2

[[providers.anthropic.credentials]]
name = "acct-b"
api_key = "sk-ant-b"
base_url = "https://eu.example.test/"
"""


def test_a_credential_pool_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "buzz.toml"
    path.write_text('[providers.anthropic]\nbase_url = "https://api.example.test"\n' + POOL.replace("[[", "\n[["))
    pool = load(path, env={}).provider("anthropic")
    assert [(c.name, c.api_key, c.base_url, c.weight) for c in pool.credentials] == [
        ("acct-a", "sk-ant-a", "https://api.example.test", 2),
        ("acct-b", "sk-ant-b", "https://eu.example.test", 1),
    ]
    assert pool.api_key == "sk-ant-a" and not pool.pool_overridden
    # The vendor's variable wins over the file, as every setting's does, and says so.
    env = load(path, env={"ANTHROPIC_API_KEY": "sk-ant-env"}).provider("anthropic")
    assert [(c.name, c.api_key) for c in env.credentials] == [("default", "sk-ant-env")]
    assert env.pool_overridden
    # A single key is a pool of one named `default`.
    single = load(None, env={"OPENAI_API_KEY": "sk-o"}).provider("openai")
    assert [(c.name, c.base_url, c.weight) for c in single.credentials] == [("default", "https://api.openai.com/v1", 1)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('name = "a"', "api_key is required"),
        ('api_key = "k"', "name must be"),
        ('name = "has space"\napi_key = "k"', "name must be"),
        ('name = "a"\napi_key = "k"\nweight = 0', "weight must be"),
        ('name = "a"\napi_key = "k"\nweight = 1.5', "weight must be"),
        ('name = "a"\napi_key = "k"\nbase_url = "ftp://x"', "base_url must be"),
        ('name = "a"\napi_key = "k"\nsecret = "x"', "unknown key secret"),
    ],
)
def test_bad_credentials_are_fatal(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "buzz.toml"
    path.write_text(f"[[providers.anthropic.credentials]]\n{entry}\n")
    with pytest.raises(ConfigError, match=message):
        load(path, env={})


def test_a_credential_name_is_unique_and_api_key_and_a_pool_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / "buzz.toml"
    path.write_text(POOL.replace('"acct-b"', '"acct-a"'))
    with pytest.raises(ConfigError, match="'acct-a' is used twice"):
        load(path, env={})
    path.write_text('[providers.anthropic]\napi_key = "sk"\n' + POOL.replace("[[", "\n[["))
    with pytest.raises(ConfigError, match="either api_key or"):
        load(path, env={})
