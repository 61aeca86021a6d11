"""What buzz persists, behind the `Store` Protocol (`buzz.store.base`).

`open_store` is the one place that picks a backend, so the CLI, the admin API and the app
depend on the Protocol only.
"""

from __future__ import annotations

from pathlib import Path

from buzz.store.base import Store


def open_store(database_path: Path) -> Store:
    from buzz.store.sqlite import SQLiteStore  # the embedded default

    return SQLiteStore(database_path)
