"""A Channels layer kept in a small SQLite file, for the embedded configuration.

Workers and the web process share no server, so they meet in a file: senders
insert rows and each receiving process reads the rows addressed to it, woken at
once by the sender's doorbell (aiserver/doorbell.py), else at its next poll. One
poll per process serves all of its WebSocket consumers, because their channel
names share the process's prefix (``specific.<prefix>!<id>``), as in
channels_redis. The file is not the application database, so a live update
never waits behind a job's write transaction, and it needs no migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from aiserver import doorbell

logger = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, Any]
Row = tuple[int, str, str, float]  # id, channel, body, expires

# AUTOINCREMENT, because ids must never be reused: a poller remembers the last
# id it delivered, and a reused id would hide a new row from it.
SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS message_channel ON message (channel, id);
CREATE INDEX IF NOT EXISTS message_expires ON message (expires);
CREATE TABLE IF NOT EXISTS membership (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (grp, channel)
);
CREATE INDEX IF NOT EXISTS membership_expires ON membership (expires);
COMMIT;
"""

PURGE_EVERY = 10.0
FETCH_LIMIT = 500

# Objects inherited through fork() are kept, never closed, in the child: closing
# an inherited SQLite connection can disturb the parent's locks.
_inherited: list[object] = []


class MessageStore:
    """The SQL side of the layer. Every method blocks; all run on one thread."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._next_purge = 0.0

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    @contextmanager
    def writing(self, now: float) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE so that waiting for the lock honours the timeout."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if now >= self._next_purge:
                self._purge(conn, now)
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        # A message left unread until it expired means nobody listens on that
        # channel any more (a consumer's process died without group_discard),
        # so its memberships go too instead of collecting rows for a day.
        conn.execute(
            "DELETE FROM membership WHERE channel IN (SELECT channel FROM message WHERE expires <= ?)",
            (now,),
        )
        conn.execute("DELETE FROM message WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM membership WHERE expires <= ?", (now,))
        self._next_purge = now + PURGE_EVERY

    def insert(self, channel: str, body: str, now: float, expires: float, capacity: int) -> bool:
        """Queue body on channel; False when the channel is already full."""
        with self.writing(now) as conn:
            if self._pending(conn, [channel], now).get(channel, 0) >= capacity:
                return False
            conn.execute(
                "INSERT INTO message (channel, body, expires) VALUES (?, ?, ?)",
                (channel, body, expires),
            )
        return True

    def insert_for_group(
        self, group: str, body: str, now: float, expires: float, capacity: Callable[[str], int]
    ) -> int:
        """Queue body on every live member of group, skipping full channels."""
        with self.writing(now) as conn:
            members = [
                row[0]
                for row in conn.execute("SELECT channel FROM membership WHERE grp = ? AND expires > ?", (group, now))
            ]
            pending = self._pending(conn, members, now)
            rows = [(c, body, expires) for c in members if pending.get(c, 0) < capacity(c)]
            conn.executemany("INSERT INTO message (channel, body, expires) VALUES (?, ?, ?)", rows)
        return len(rows)

    @staticmethod
    def _pending(conn: sqlite3.Connection, channels: list[str], now: float) -> dict[str, int]:
        if not channels:
            return {}
        marks = ",".join("?" * len(channels))
        query = f"SELECT channel, COUNT(*) FROM message WHERE channel IN ({marks}) AND expires > ? GROUP BY channel"
        return dict(conn.execute(query, (*channels, now)).fetchall())

    def fetch_after(self, prefix: str, after_id: int, now: float) -> list[Row]:
        """Unexpired rows for channels starting with prefix (ending in "!"), oldest first."""
        # "!" + 1 is '"', so this range is exactly the names that start with prefix.
        upper = prefix[:-1] + '"'
        return self.conn.execute(
            "SELECT id, channel, body, expires FROM message "
            "WHERE channel >= ? AND channel < ? AND id > ? AND expires > ? "
            "ORDER BY id LIMIT ?",
            (prefix, upper, after_id, now, FETCH_LIMIT),
        ).fetchall()

    def forget_through(self, prefix: str, last_id: int) -> None:
        """Delete the rows for prefix that have been handed to this process."""
        with self.writing(time.time()) as conn:
            conn.execute(
                "DELETE FROM message WHERE channel >= ? AND channel < ? AND id <= ?",
                (prefix, prefix[:-1] + '"', last_id),
            )

    def claim(self, channel: str, now: float) -> str | None:
        """Take the oldest message from a channel several processes may read."""
        probe = "SELECT id, body FROM message WHERE channel = ? AND expires > ? ORDER BY id LIMIT 1"
        # Reading first keeps an idle poll from taking the write lock.
        if self.conn.execute(probe, (channel, now)).fetchone() is None:
            return None
        with self.writing(now) as conn:
            row = conn.execute(probe, (channel, now)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM message WHERE id = ?", (row[0],))
        return row[1] if row else None

    def add_member(self, group: str, channel: str, expires: float) -> None:
        with self.writing(time.time()) as conn:
            conn.execute(
                "INSERT INTO membership (grp, channel, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (grp, channel) DO UPDATE SET expires = excluded.expires",
                (group, channel, expires),
            )

    def discard_member(self, group: str, channel: str) -> None:
        with self.writing(time.time()) as conn:
            conn.execute("DELETE FROM membership WHERE grp = ? AND channel = ?", (group, channel))

    def flush(self) -> None:
        with self.writing(time.time()) as conn:
            conn.execute("DELETE FROM message")
            conn.execute("DELETE FROM membership")


@dataclass
class Inbox:
    """Messages already read from the file for one process-local channel."""

    queue: asyncio.Queue[tuple[float, Message]] = field(default_factory=asyncio.Queue)
    waiters: int = 0
    touched: float = field(default_factory=time.time)


class SQLiteChannelLayer(BaseChannelLayer):
    """Channel layer over one SQLite file shared by every process on the host.

    Messages are stored as JSON, so their values must be JSON-serialisable.
    """

    extensions = ["groups", "flush"]
    # Set per process by _own_process().
    _prefix: str
    _store: MessageStore
    _executor: ThreadPoolExecutor
    _last_id: int

    def __init__(
        self,
        path: str | Path,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
        poll_interval: float = 0.05,
        timeout: float = 20.0,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.path = Path(path)
        self.group_expiry = group_expiry
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inboxes: dict[str, Inbox] = {}
        self._poller: asyncio.Task[None] | None = None
        # Senders ring the bells in this folder after writing (aiserver/doorbell.py).
        self._bells = Path(f"{self.path}.bells")
        self._bell: tuple[asyncio.AbstractEventLoop, socket.socket, asyncio.Event] | None = None
        self._waiting = 0
        self._own_process()

    # Per-process and per-loop state ---------------------------------------

    def _own_process(self) -> None:
        """Give a forked child its own prefix, connection and DB thread."""
        if self._pid == os.getpid():
            return
        if self._pid != -1:
            _inherited.extend([self._store, self._executor])
        self._pid = os.getpid()
        self._bell = None  # a forked child's own bell is bound when it first waits
        self._prefix = f"specific.{uuid.uuid4().hex}!"
        self._store = MessageStore(self.path, self.timeout)
        # One thread per process: SQLite writes are serial anyway, and a wait
        # for the lock must block neither the event loop nor Django's sync thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="channel-layer")
        self._last_id = 0
        self._inboxes = {}

    def _own_loop(self) -> None:
        """Inboxes and the poller belong to one event loop; start over on another."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._inboxes = {}
            self._poller = None
            self._waiting = 0

    async def _db(self, work: Callable[[MessageStore], T]) -> T:
        """Run work against this process's store on its DB thread."""
        self._own_process()
        store = self._store
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, store)

    # Channel layer API -----------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        # One prefix keeps the poll to a single range query per process.
        if prefix != "specific":
            raise ValueError("this layer only makes channels with the 'specific' prefix")
        self._own_process()
        return f"{self._prefix}{uuid.uuid4().hex}"

    async def send(self, channel: str, message: Message) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        now = time.time()
        body = json.dumps(message)
        capacity = self.get_capacity(channel)
        expires = now + self.expiry
        sent = await self._db(lambda store: store.insert(channel, body, now, expires, capacity))
        if not sent:
            raise ChannelFull(channel)
        doorbell.ring(self._bells)

    async def receive(self, channel: str) -> Message:
        self.require_valid_channel_name(channel)
        if "!" not in channel:
            return await self._receive_shared(channel)
        self._own_process()
        assert channel.startswith(self._prefix), "channel was not made by this process"
        self._own_loop()
        inbox = self._inboxes.setdefault(channel, Inbox())
        inbox.waiters += 1
        self._waiting += 1
        self._start_poller()
        try:
            while True:
                expires, message = await inbox.queue.get()
                if expires > time.time():
                    return message
        finally:
            inbox.waiters -= 1
            self._waiting -= 1

    async def _receive_shared(self, channel: str) -> Message:
        while True:
            now = time.time()
            body = await self._db(partial(MessageStore.claim, channel=channel, now=now))
            if body is not None:
                return json.loads(body)
            await asyncio.sleep(self.poll_interval)

    # Polling ---------------------------------------------------------------

    def _start_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        """Move this process's rows into inboxes while anyone is receiving."""
        prefix = self._prefix
        while self._waiting > 0:
            rows: list[Row] = []
            try:
                after, now = self._last_id, time.time()
                rows = await self._db(partial(MessageStore.fetch_after, prefix=prefix, after_id=after, now=now))
                if rows:
                    self._deliver(rows)
                    last = self._last_id
                    await self._db(partial(MessageStore.forget_through, prefix=prefix, last_id=last))
            except Exception:
                # Every consumer in the process waits on this one task, so it
                # must outlive any failure. The in-memory last id already
                # prevents duplicates; undeleted rows go on a later delete.
                logger.exception("channel layer poll failed")
            self._drop_idle_inboxes()
            if not rows:
                await self._nap()

    async def _nap(self) -> None:
        """Until a sender rings this process's bell, or poll_interval at most (a bell can be lost)."""
        rung = self._bell_for_loop()
        if rung is None:
            await asyncio.sleep(self.poll_interval)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rung.wait(), self.poll_interval)
        rung.clear()

    def _bell_for_loop(self) -> asyncio.Event | None:
        """This process's doorbell, read by the running loop; None where no socket can be bound."""
        loop = asyncio.get_running_loop()
        if self._bell is not None and self._bell[0] is loop:
            return self._bell[2]
        self._silence_bell()
        bell = doorbell.bind(self._bells, self._prefix.removeprefix("specific.").rstrip("!")[:16])
        if bell is None:
            return None
        rung = asyncio.Event()

        def on_ring() -> None:
            doorbell.silence(bell)
            rung.set()

        loop.add_reader(bell.fileno(), on_ring)
        self._bell = (loop, bell, rung)
        return rung

    def _silence_bell(self) -> None:
        if self._bell is None:
            return
        loop, bell, _ = self._bell
        with contextlib.suppress(Exception):  # its loop may be closed already
            loop.remove_reader(bell.fileno())
        bell.close()
        self._bell = None

    def _deliver(self, rows: list[Row]) -> None:
        for row_id, channel, body, expires in rows:
            inbox = self._inboxes.setdefault(channel, Inbox())
            inbox.queue.put_nowait((expires, json.loads(body)))
            inbox.touched = time.time()
            self._last_id = row_id

    def _drop_idle_inboxes(self) -> None:
        # An inbox nobody has waited on for a whole expiry period belongs to a
        # consumer that has gone; its messages would be expired when read anyway.
        stale = time.time() - self.expiry
        for channel, inbox in list(self._inboxes.items()):
            if inbox.waiters == 0 and (inbox.queue.empty() or inbox.touched < stale):
                del self._inboxes[channel]

    # Groups and flush ------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        expires = time.time() + self.group_expiry
        await self._db(lambda store: store.add_member(group, channel, expires))

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._db(lambda store: store.discard_member(group, channel))

    async def group_send(self, group: str, message: Message) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        now = time.time()
        body = json.dumps(message)
        expires = now + self.expiry
        capacity = self.get_capacity
        if await self._db(lambda store: store.insert_for_group(group, body, now, expires, capacity)):
            doorbell.ring(self._bells)

    async def flush(self) -> None:
        await self._db(lambda store: store.flush())
        # Empty the queues in place: a receiver may be waiting on one.
        for inbox in self._inboxes.values():
            while not inbox.queue.empty():
                inbox.queue.get_nowait()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        self._silence_bell()
