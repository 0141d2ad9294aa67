"""The registry file's SQL schema and its forward migrations (registry.py applies them on first open)."""

from __future__ import annotations

from .records import OPEN_SQL

__all__ = ["MIGRATIONS", "OPEN_NAME_INDEX", "SCHEMA", "SCHEMA_VERSION"]

#: The schema this cumulo writes. Older files are migrated forward; newer ones are refused.
SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    spec TEXT NOT NULL DEFAULT '{}',
    address TEXT,
    dashboard TEXT,
    state TEXT NOT NULL,
    owner_pid INTEGER,
    owner_host TEXT,
    owner_started REAL,
    owner_boot TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    closed REAL,
    heartbeat REAL,
    lease_seconds REAL,
    workers INTEGER,
    threads INTEGER,
    memory INTEGER,
    gpus INTEGER,
    gpu_model TEXT,
    backend TEXT,
    budget REAL,
    idle_timeout REAL,
    rate_per_hour REAL,
    cost REAL,
    cost_kind TEXT,
    note TEXT,
    usage TEXT,
    rate_changes TEXT
);
CREATE INDEX IF NOT EXISTS clusters_created ON clusters(created);
CREATE TABLE IF NOT EXISTS resources (
    provider TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    cluster_id TEXT NOT NULL REFERENCES clusters(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (provider, resource_id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
"""

#: Forward migrations: MIGRATIONS[v] takes a file from schema v to v + 1.
MIGRATIONS: dict[int, str] = {
    # v1 -> v2: 'stop-failed' (cleanup failed, may still bill) is an open state, so it holds its name
    1: "DROP INDEX IF EXISTS clusters_one_open_name; "
       "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    # v2 -> v3: an owner is a process identity, not a bare PID (cumulo.life.owner); a closed cluster keeps
    # its final usage (JSON: totals, busy/idle, energy, top cells) so `cumulo usage` shows it later
    2: "ALTER TABLE clusters ADD COLUMN owner_started REAL; "
       "ALTER TABLE clusters ADD COLUMN owner_boot TEXT; "
       "ALTER TABLE clusters ADD COLUMN usage TEXT;",
    # v3 -> v4: a cluster's rate can change while it runs (a spot instance taken back stops billing)
    3: "ALTER TABLE clusters ADD COLUMN rate_changes TEXT;",
}
OPEN_NAME_INDEX = f"CREATE UNIQUE INDEX IF NOT EXISTS clusters_one_open_name ON clusters(name) WHERE state IN {OPEN_SQL};"
