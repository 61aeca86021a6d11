from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fake_anthropic import FakeAnthropic
from stores import Postgres
from support import BuzzProcess


@pytest.fixture(scope="session")
def fake_session() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(fake_session: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The shared fake upstream, with no requests recorded and no replies queued."""
    fake_session.clear()
    yield fake_session
    fake_session.clear()
    while fake_session.pending_replies:
        fake_session.drain_replies()


@pytest.fixture(scope="module")
def buzz_module(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    """One buzz process per test module, on the shared fake upstream."""
    data_dir: Path = tmp_path_factory.mktemp("buzz") / "data"
    with BuzzProcess(data_dir, fake_session.url) as process:
        yield process


@pytest.fixture
def buzz(buzz_module: BuzzProcess, fake: FakeAnthropic) -> BuzzProcess:
    return buzz_module


@pytest.fixture(scope="module")
def key(buzz_module: BuzzProcess) -> str:
    return buzz_module.create_key(project="acme", name="tests")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Fresh schemas on the shared PostgreSQL, dropped when the run ends."""
    databases = Postgres()
    yield databases
    databases.close()
