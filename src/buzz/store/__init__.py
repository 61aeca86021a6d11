"""What buzz persists, behind the `Store` Protocol (`buzz.store.base`).

`open_store` is the one place that picks a backend, so the CLI, the admin API and the app
depend on the Protocol only.
"""

from __future__ import annotations

from pathlib import Path

from buzz.store.base import Store


def open_store(database_path: Path, database_url: str | None = None) -> Store:
    """PostgreSQL when `database_url` is given (postgresql://…), else the embedded SQLite file;
    migrations applied either way."""
    if database_url:
        from buzz.store.postgres import PostgresStore  # psycopg is imported only when configured

        return PostgresStore(database_url)
    from buzz.store.sqlite import SQLiteStore  # the embedded default

    return SQLiteStore(database_path)
