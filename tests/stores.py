"""Both store backends for the contract tests: the embedded SQLite file, and PostgreSQL at
127.0.0.1:5432 (database `test`), each store in a fresh schema of its own that is dropped when
the run ends."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import psycopg

from buzz.store.base import Store
from buzz.store.postgres import PostgresStore
from buzz.store.sqlite import SQLiteStore

BACKENDS = ("sqlite", "postgres")
SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def schema_url(server: str, schema: str) -> str:
    """A URL whose connections work in `schema` (tables, and the store's notifications)."""
    return f"{server}?options={quote(f'-csearch_path={schema}')}"


class Postgres:
    """Fresh schemas on one PostgreSQL server, all dropped by `close`."""

    def __init__(self, server: str = SERVER) -> None:
        self.server = server
        self._run = secrets.token_hex(4)
        self._schemas: list[str] = []

    def new_url(self) -> str:
        schema = f"buzz_test_{self._run}_{len(self._schemas)}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self._schemas.append(schema)
        return schema_url(self.server, schema)

    def close(self) -> None:
        if not self._schemas:
            return
        with psycopg.connect(self.server, autocommit=True) as conn:
            for schema in self._schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self._schemas.clear()


def open_backend(kind: str, folder: Path, postgres: Postgres) -> Store:
    if kind == "sqlite":
        return SQLiteStore(folder / "buzz.sqlite3")
    return PostgresStore(postgres.new_url())
