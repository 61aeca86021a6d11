"""Migrations carry an existing database forward without losing what it meant."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

from buzz.store.sqlite import SQLiteStore


def _database_at(path: Path, last: str) -> None:
    """A database as an older buzz left it: the migrations up to `last`, applied as buzz applies them."""
    folder = resources.files("buzz.store") / "migrations" / "sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for script in sorted(folder.iterdir(), key=lambda p: p.name):
        if script.name.endswith(".sql") and script.name <= last:
            conn.executescript(script.read_text())
            conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-11-01T00:00:00.000Z')", (script.name,))
    conn.commit()
    conn.close()


def test_key_expiries_become_unix_seconds_and_unreadable_ones_stay_refused(tmp_path: Path) -> None:
    path = tmp_path / "buzz.sqlite3"
    _database_at(path, "0002_limits.sql")
    conn = sqlite3.connect(path)
    for key_id, expiry in (("k1", "2027-01-31T12:00:00Z"), ("k2", "tomorrow"), ("k3", None)):
        conn.execute(
            "INSERT INTO keys (id, project, secret_hash, created_at, expires_at) VALUES (?, 'p', x'00', '2026', ?)",
            (key_id, expiry),
        )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    try:
        expiries = {record.id: record.expires_at for record in store.list_keys()}
    finally:
        store.close()
    # 2027-01-31T12:00:00Z; free text the request path could never read is "already expired".
    assert expiries == {"k1": 1_801_396_800, "k2": 0, "k3": None}
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT DISTINCT typeof(expires_unix) FROM keys WHERE id != 'k3'").fetchall() == [("integer",)]
    conn.close()
