"""Django's SQLite backend, with every writer queueing on a file lock instead of SQLite's busy sleeps.

Write transactions (IMMEDIATE, as configured) take the lock as they begin and let it go on
commit, rollback or close. A write statement outside a transaction (Django's autocommit: an
update() or save() not in atomic()) takes it for that statement alone: left to SQLite's busy
handler it waited out sleeps of up to 25 ms behind the other processes' transactions, and was
most of the time a queued job took to start (aiserver.sqlite.writelock).
"""

from __future__ import annotations

import re
from typing import Any

from django.db.backends.sqlite3 import base

from aiserver.sqlite.writelock import WriteLock

# A statement that writes (Django's ORM and migrations); reads never wait in WAL mode.
WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)


class DatabaseWrapper(base.DatabaseWrapper):
    _write_lock: WriteLock | None = None

    @property
    def write_lock(self) -> WriteLock | None:
        """None for an in-memory database (nobody else writes to it)."""
        if self._write_lock is None and not self.is_in_memory_db():
            self._write_lock = WriteLock(self.settings_dict["NAME"])
        return self._write_lock

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=LockingCursorWrapper)
        cursor.wrapper = self
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        self._take_write_lock()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private hooks are not in the stubs
        except BaseException:
            self._release_write_lock()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]
        finally:
            self._release_write_lock()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]
        finally:
            self._release_write_lock()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]
        finally:
            if self._write_lock is not None:
                self._write_lock.close()

    def _take_write_lock(self) -> None:
        if (lock := self.write_lock) is not None and not lock.held:
            lock.acquire()

    def _release_write_lock(self) -> None:
        if self._write_lock is not None:
            self._write_lock.release()

    def writes_alone(self, query: str) -> bool:
        """A write statement outside a transaction of ours: it takes the lock for itself."""
        lock = self.write_lock
        return lock is not None and not lock.held and self.get_autocommit() and bool(WRITES.match(query))


class LockingCursorWrapper(base.SQLiteCursorWrapper):
    wrapper: DatabaseWrapper

    def execute(self, query: str, params: Any = None) -> Any:
        if not self.wrapper.writes_alone(query):
            return super().execute(query, params)
        self.wrapper._take_write_lock()
        try:
            return super().execute(query, params)
        finally:
            self.wrapper._release_write_lock()

    def executemany(self, query: str, param_list: Any) -> Any:
        if not self.wrapper.writes_alone(query):
            return super().executemany(query, param_list)
        self.wrapper._take_write_lock()
        try:
            return super().executemany(query, param_list)
        finally:
            self.wrapper._release_write_lock()
