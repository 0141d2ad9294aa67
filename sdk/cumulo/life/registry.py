"""The user's clusters, shared by every kernel, the CLI and the Jupyter server.

One SQLite file in WAL mode (readers never block the writer; writers queue on a
busy timeout), so several processes can record clusters at once. Rows are
never deleted: a closed cluster stays as history. The registry holds no
secrets; specs are checked for secret-looking keys before they are stored
(see spec.ClusterSpec.validate), and free-text fields are only ever written by
cumulo itself.

The rows as read are records.py's; the SQL schema and its migrations are schema.py's.

Tables:
  clusters   one row per cluster ever started or attached (name unique among open rows)
  resources  billable things a cluster owns at a provider (instances, firewall rules)
  events     an append-only log of what happened to each cluster
  meta       facts about this registry itself (its installation id)
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from .. import config
from ..exceptions import RegistryError, SpecError
from .owner import Owner, this_process
from .records import (CLOSED_STATES, OPEN_SQL, OPEN_STATES, ClusterRecord, CorruptRow, ResourceRecord, cluster_of_row,
                      readable, resource_of_row)
from .schema import MIGRATIONS, OPEN_NAME_INDEX, SCHEMA, SCHEMA_VERSION

__all__ = ["ClusterRecord", "CorruptRow", "Registry", "ResourceRecord", "OPEN_STATES", "CLOSED_STATES", "SCHEMA_VERSION",
           "rate_change"]

logger = logging.getLogger(__name__)

_CLUSTER_FIELDS = {f.name for f in fields(ClusterRecord)}
_UPDATABLE = _CLUSTER_FIELDS - {"id", "created"}


class Registry:
    """Access to the registry file. Cheap to create; each call opens a short connection.

    ``path`` defaults to config.path_of_registry() ($CUMULO_REGISTRY, the
    ``cumulo.registry.path`` setting, or the user data directory).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0) -> None:
        default = config.path_of_registry() if path is None else None
        self.path = Path(path) if path is not None else default
        assert self.path is not None
        self.timeout = timeout
        try:
            _private_place(self.path, own_folder=path is None and not os.environ.get("CUMULO_REGISTRY")
                           and not config.get("registry.path"))
            self._first_open()
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(
                f"cannot open the cluster registry at {self.path}: {exc}. Set CUMULO_REGISTRY "
                "or the cumulo.registry.path config to a writable file."
            ) from exc

    def _first_open(self) -> None:
        """Switch the file to WAL and migrate it, waiting out other processes doing the same.

        SQLite answers "database is locked" at once, without its busy handler, when
        two connections switch a fresh file's journal mode together; so the first
        open retries with backoff for as long as the busy timeout would wait.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                with self._connect() as db:
                    self._migrate(db)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r})"

    @property
    def installation_id(self) -> str:
        """A short random id of this registry, made once; cumulo puts it in the names of what it
        creates at providers, so that a sweep can tell its own orphans from another installation's."""
        rows = self._read("SELECT value FROM meta WHERE key = 'installation'")
        if rows:
            return str(rows[0]["value"])
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('installation', ?)", (uuid.uuid4().hex[:8],))
        return str(self._read("SELECT value FROM meta WHERE key = 'installation'")[0]["value"])

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create a new file, or bring an older one forward step by step; refuse a newer one."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(
                f"the cluster registry at {self.path} has schema version {version}, newer than this cumulo "
                f"understands (version {SCHEMA_VERSION}): upgrade cumulo (pip install -U cumulo), or point "
                "CUMULO_REGISTRY at another file")
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            again = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            if again < SCHEMA_VERSION:
                fresh = again == 0 and not db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='clusters'").fetchone()
                if fresh:
                    for stmt in SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                else:
                    for step in range(max(again, 1), SCHEMA_VERSION):
                        for stmt in MIGRATIONS[step].split(";"):
                            if stmt.strip():
                                db.execute(stmt)
                db.execute(OPEN_NAME_INDEX)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # persistent once set
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                else:
                    db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot write the cluster registry at {self.path}: {exc}") from exc

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            with self._connect() as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the cluster registry at {self.path}: {exc}") from exc

    # -- clusters ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        provider: str,
        spec: dict[str, Any] | None = None,
        *,
        state: str = "starting",
        **values: Any,
    ) -> ClusterRecord:
        """Add a cluster row owned by this process. Raises SpecError if an open cluster has that name."""
        now = time.time()
        row: dict[str, Any] = {
            "id": uuid.uuid4().hex[:12],
            "name": name,
            "provider": provider,
            "spec": json.dumps(spec or {}, sort_keys=True),
            "state": state,
            "created": now,
            "updated": now,
            "heartbeat": now,
        }
        row.update(_owner_values(this_process()))
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown cluster fields: {sorted(unknown)}")
        row.update(values)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self._write() as db:
                db.execute(f"INSERT INTO clusters ({cols}) VALUES ({marks})", tuple(row.values()))
                db.execute(
                    "INSERT INTO events (cluster_id, ts, kind, message) VALUES (?, ?, ?, ?)",
                    (row["id"], now, "created", f"{provider} cluster {name!r} requested"),
                )
        except RegistryError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise SpecError(
                    f"a cluster named {name!r} is already open; attach to it with "
                    f"cumulo.connect(name={name!r}), close it with `cumulo down {name}`, or pick another name"
                ) from None
            raise
        return self.get(row["id"])

    def get(self, cluster_id: str) -> ClusterRecord:
        """The row with this id; KeyError if there is none."""
        rows = self._read("SELECT * FROM clusters WHERE id = ?", (cluster_id,))
        if not rows:
            raise KeyError(cluster_id)
        return cluster_of_row(rows[0], self.path)

    def find_open(self, name: str) -> ClusterRecord | None:
        """The open cluster with this name, if any."""
        rows = self._read(
            f"SELECT * FROM clusters WHERE name = ? AND state IN {OPEN_SQL}", (name,)
        )
        return cluster_of_row(rows[0], self.path) if rows else None

    def latest(self, name: str) -> ClusterRecord | None:
        """The most recent cluster with this name, open or closed."""
        rows = self._read("SELECT * FROM clusters WHERE name = ? ORDER BY created DESC LIMIT 1", (name,))
        return cluster_of_row(rows[0], self.path) if rows else None

    def list(self, *, include_closed: bool = True, since: float | None = None) -> list[ClusterRecord]:
        """Clusters, newest first; closed ones only if they were created after ``since`` (when given)."""
        sql = "SELECT * FROM clusters"
        args: tuple[Any, ...] = ()
        if not include_closed:
            sql += f" WHERE state IN {OPEN_SQL}"
        elif since is not None:
            sql += f" WHERE state IN {OPEN_SQL} OR created >= ?"
            args = (since,)
        sql += " ORDER BY created DESC"
        return readable(self._read(sql, args), self.path)

    def update(self, cluster_id: str, **values: Any) -> None:
        """Set fields of a cluster row (``spec`` may be given as a dict); never its state.

        A row's state is written only by cumulo.life.lifecycle (through :meth:`transition`).
        """
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown cluster fields: {sorted(unknown)}")
        if "state" in values or "closed" in values:
            raise TypeError("a cluster's state is written only by cumulo.life.lifecycle")
        if "spec" in values and not isinstance(values["spec"], str):
            values["spec"] = json.dumps(values["spec"], sort_keys=True)
        values["updated"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE clusters SET {sets} WHERE id = ?", (*values.values(), cluster_id))

    def disown(self, cluster_id: str) -> None:
        """Record that no process owns the cluster any more (its kernel disconnected and left it
        running): from now on every reaper enforces its budget and idle timeout."""
        values = _owner_values(None) | {"updated": time.time()}
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE clusters SET {sets} WHERE id = ?", (*values.values(), cluster_id))

    def heartbeat(self, cluster_id: str) -> None:
        """Record that the owning kernel is alive (the kernel lease)."""
        now = time.time()
        with self._write() as db:
            db.execute("UPDATE clusters SET heartbeat = ?, updated = ? WHERE id = ?", (now, now, cluster_id))

    def transition(
        self,
        cluster_id: str,
        state: str,
        *,
        allowed_from: list[str],
        final: bool,
        note: str | None = None,
        values: dict[str, Any] | None = None,
        event: tuple[str, str] | None = None,
    ) -> bool:
        """Move a row to ``state`` if it is now in one of ``allowed_from``; the lifecycle's only write.

        Done in one transaction, so two processes racing to stop a cluster agree
        on one outcome. Returns whether the row moved. ``values`` are other fields
        set with the move; ``note`` replaces the row's note (for a final move
        only if given); ``final`` stamps the closing time.
        """
        unknown = set(values or {}) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown cluster fields: {sorted(unknown)}")
        now = time.time()
        sets = {"state": state, "updated": now, **(values or {})}
        if note is not None:
            sets["note"] = note[:1000]
        if final:
            sets["closed"] = now
        marks = ", ".join(f"{k} = ?" for k in sets)
        allowed = ", ".join("?" for _ in allowed_from) or "NULL"
        with self._write() as db:
            cur = db.execute(
                f"UPDATE clusters SET {marks} WHERE id = ? AND state IN ({allowed})",
                (*sets.values(), cluster_id, *allowed_from))
            moved = cur.rowcount > 0
            if moved and event is not None:
                db.execute("INSERT INTO events (cluster_id, ts, kind, message) VALUES (?, ?, ?, ?)",
                           (cluster_id, now, event[0], event[1]))
        return moved

    def discard(self, cluster_id: str) -> None:
        """Remove a row that never described anything that ran (a start refused before launching)."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM resources WHERE cluster_id = ?", (cluster_id,)).fetchone():
                raise RegistryError(f"cluster {cluster_id} has recorded resources; it cannot be discarded")
            db.execute("DELETE FROM events WHERE cluster_id = ?", (cluster_id,))
            db.execute("DELETE FROM clusters WHERE id = ?", (cluster_id,))

    # -- events -----------------------------------------------------------------------------

    def event(self, cluster_id: str, kind: str, message: str) -> None:
        """Append to a cluster's event log."""
        with self._write() as db:
            db.execute(
                "INSERT INTO events (cluster_id, ts, kind, message) VALUES (?, ?, ?, ?)",
                (cluster_id, time.time(), kind, message),
            )

    def events(self, cluster_id: str) -> list[tuple[float, str, str]]:
        """A cluster's events, oldest first, as (timestamp, kind, message)."""
        rows = self._read("SELECT ts, kind, message FROM events WHERE cluster_id = ? ORDER BY id", (cluster_id,))
        return [(r["ts"], r["kind"], r["message"]) for r in rows]

    # -- resources --------------------------------------------------------------------------

    def add_resource(
        self,
        cluster_id: str,
        provider: str,
        kind: str,
        resource_id: str,
        *,
        state: str = "requested",
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Record a billable resource before (or as soon as) it exists, so nothing is orphaned."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO resources (provider, resource_id, cluster_id, kind, state, created, updated, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(provider, resource_id) DO UPDATE SET "
                "state = excluded.state, updated = excluded.updated, meta = excluded.meta",
                (provider, resource_id, cluster_id, kind, state, now, now, json.dumps(meta or {})),
            )

    def update_resource(self, provider: str, resource_id: str, *, state: str) -> None:
        """Change the recorded state of a resource (e.g. 'active', 'terminated')."""
        with self._write() as db:
            db.execute(
                "UPDATE resources SET state = ?, updated = ? WHERE provider = ? AND resource_id = ?",
                (state, time.time(), provider, resource_id),
            )

    def stop_billing(self, provider: str, resource_id: str, *, at: float, state: str) -> ResourceRecord | None:
        """One instance of a priced cluster stopped billing at ``at`` (taken back by the cloud): record its new
        ``state`` and take its ``price_per_hour`` off the cluster's rate from then on, once.

        Returns the resource as it was, or None when there was nothing to do (unknown, already stopped,
        or without a recorded price), so that a notice seen twice changes the rate once.
        """
        with self._write() as db:
            row = db.execute("SELECT * FROM resources WHERE provider = ? AND resource_id = ?",
                             (provider, resource_id)).fetchone()
            if row is None or row["state"] in _NOT_BILLING:
                return None
            price = json.loads(row["meta"]).get("price_per_hour")
            db.execute("UPDATE resources SET state = ?, updated = ? WHERE provider = ? AND resource_id = ?",
                       (state, time.time(), provider, resource_id))
            if isinstance(price, (int, float)):
                _shift_rate(db, row["cluster_id"], at=at, delta=-float(price))
            return resource_of_row(row)

    def start_billing(self, provider: str, resource_id: str, *, at: float) -> ResourceRecord | None:
        """An instance added to a running priced cluster (a scale-up, a replacement) bills from ``at``: add its
        recorded ``price_per_hour`` to the cluster's rate from then on. Returns the resource, or None when it is
        unknown, not billing, or has no recorded price."""
        with self._write() as db:
            row = db.execute("SELECT * FROM resources WHERE provider = ? AND resource_id = ?",
                             (provider, resource_id)).fetchone()
            if row is None or row["state"] in _NOT_BILLING:
                return None
            price = json.loads(row["meta"]).get("price_per_hour")
            if not isinstance(price, (int, float)):
                return None
            _shift_rate(db, row["cluster_id"], at=at, delta=float(price))
            return resource_of_row(row)

    def resources(
        self, *, cluster_id: str | None = None, provider: str | None = None
    ) -> list[ResourceRecord]:
        """Resources, filtered by cluster and/or provider."""
        sql = "SELECT * FROM resources WHERE 1=1"
        args: list[Any] = []
        if cluster_id is not None:
            sql += " AND cluster_id = ?"
            args.append(cluster_id)
        if provider is not None:
            sql += " AND provider = ?"
            args.append(provider)
        rows = self._read(sql + " ORDER BY created", tuple(args))
        return [resource_of_row(r) for r in rows]


def _shift_rate(db: sqlite3.Connection, cluster_id: str, *, at: float, delta: float) -> None:
    """Change a priced cluster's rate by ``delta`` $/h from ``at`` on, keeping the history (``rate_changes``)."""
    cluster = db.execute("SELECT created, rate_per_hour, rate_changes FROM clusters WHERE id = ?",
                         (cluster_id,)).fetchone()
    if cluster is None or cluster["rate_per_hour"] is None:
        return
    changes = json.loads(cluster["rate_changes"] or "null") or [[cluster["created"], cluster["rate_per_hour"]]]
    changes = rate_change(changes, at=at, delta=delta)
    db.execute("UPDATE clusters SET rate_per_hour = ?, rate_changes = ?, updated = ? WHERE id = ?",
               (changes[-1][1], json.dumps(changes), time.time(), cluster_id))


#: Resource states of instances that no longer bill (taken back by the cloud, or gone).
_NOT_BILLING = ("interrupted", "preempted", "terminated", "deleted", "gone")


def rate_change(changes: list[list[float]], *, at: float, delta: float) -> list[list[float]]:
    """``changes`` ([time, rate from then on], in time order) with the rate changed by ``delta`` from ``at`` on.

    ``at`` may fall before the last change (notices can arrive late): every later rate moves too.
    """
    out = [list(c) for c in changes]
    before = [c for c in out if c[0] <= at]
    rate_then = before[-1][1] if before else out[0][1]
    for c in out:
        if c[0] > at:
            c[1] = max(0.0, c[1] + delta)
    out.append([at, max(0.0, rate_then + delta)])
    out.sort(key=lambda c: c[0])
    return out


def _owner_values(owner: Owner | None) -> dict[str, Any]:
    """The row's owner columns for ``owner`` (all None: nobody owns it)."""
    if owner is None:
        return {"owner_pid": None, "owner_host": None, "owner_started": None, "owner_boot": None}
    return {"owner_pid": owner.pid, "owner_host": owner.host, "owner_started": owner.started,
            "owner_boot": owner.boot}


def _private_place(path: Path, *, own_folder: bool) -> None:
    """Make the registry file (and its WAL and shared-memory files) readable by this user only.

    The folder is created 0700; an existing folder is tightened only when it is
    cumulo's own default one (a path the user chose may be a shared folder).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    elif own_folder and path.parent.stat().st_mode & 0o077:
        path.parent.chmod(0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except FileNotFoundError:
            continue
