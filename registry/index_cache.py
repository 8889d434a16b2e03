"""An in-process cache of index documents for PostgreSQL deployments, kept exact by
LISTEN/NOTIFY: every write transaction that changes a patch's index sends
`NOTIFY llmpatch_index, '<name>'`, which PostgreSQL delivers to every worker on commit.

Correctness rules:
- cache only while the listener is connected and listening; on any listener error, clear
  the cache and stop caching until it has reconnected (then nothing stale can survive);
- a reader stores what it read only if no notification arrived between its snapshot of
  `generation` and its store; otherwise a read that raced a commit could pin an old document.

SQLite needs none of this: a local file lookup is already cheaper than a cache miss here.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

CHANNEL = "llmpatch_index"


class IndexCache:
    def __init__(self, dsn: str, max_entries: int = 10000):
        self.dsn = dsn
        self.max_entries = max_entries
        self.entries: dict[str, tuple] = {}
        self.generation = 0
        self.healthy = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- used by the read path ---------------------------------------------------------

    def get(self, name: str):
        return self.entries.get(name) if self.healthy else None

    def snapshot(self) -> int | None:
        """Call before reading the database; None means: do not cache this read."""
        return self.generation if self.healthy else None

    def put(self, name: str, value: tuple, generation: int | None) -> None:
        if generation is None:
            return
        with self._lock:
            if self.healthy and self.generation == generation:
                if len(self.entries) >= self.max_entries:
                    self.entries.clear()
                self.entries[name] = value

    # -- the listener thread -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llmpatch-index-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def invalidate_many(self, names) -> None:
        for name in names:
            self._invalidate(name)

    def _invalidate(self, name: str | None) -> None:
        with self._lock:
            self.generation += 1
            if name is None:
                self.entries.clear()
            else:
                self.entries.pop(name, None)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._invalidate(None)  # anything cached before LISTEN may have missed a change
                    self.healthy = True
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=0.2):
                            self._invalidate(notice.payload or None)
            except Exception as exc:  # the database went away: stop caching, retry
                log.warning("index cache listener: %s; caching is off until it reconnects", exc)
            finally:
                self.healthy = False
                self._invalidate(None)
            self._stop.wait(1.0)


def notify_changed(session, canonical: str) -> None:
    """Inside a write transaction: tell every worker's cache that `canonical` changed."""
    session.info.setdefault("changed", set()).add(canonical)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        session.execute(text("SELECT pg_notify(:channel, :name)"), {"channel": CHANNEL, "name": canonical})
