"""A few threads per process that keep their database connections, for async views' database work.

Django runs each sync piece of an async request on a thread made for that request, so every
request used to open (and close) a database connection of its own: a millisecond or more per
request on SQLite, several on PostgreSQL. These threads live as long as the process and keep
their connections, checked before each use the way Django checks a request's.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import connections

from imagetotext.conf import Conf

P = ParamSpec("P")
T = TypeVar("T")

_pool: tuple[int, ThreadPoolExecutor] | None = None
_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """This process's database threads, made on first use (and anew in a forked child)."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(Conf.DB_THREADS, thread_name_prefix="db"))
        return _pool[1]


async def arun(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """From async code: run sync database work on one of the process's database threads."""
    call = functools.partial(run_checked, work, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor(), call)


_thread = threading.local()


def hold_no_connection() -> None:
    """Mark the calling thread as one that waits on backends (a job thread): its database work
    is done on the database threads, so that however many jobs are in flight, a process holds
    no more connections than it has database threads."""
    _thread.forwards = True


def run(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """From sync code: database work, on a database thread if this thread holds no connection, else here.

    Every other thread (a test's, django-q2's sync mode, a database thread itself) works on
    its own connection, so a test's transaction sees what the job wrote.
    """
    if not getattr(_thread, "forwards", False):
        return work(*args, **kwargs)
    return executor().submit(functools.partial(run_checked, work, *args, **kwargs)).result()


def run_checked(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    drop_broken_connections()
    try:
        return work(*args, **kwargs)
    finally:
        drop_broken_connections()


def drop_broken_connections() -> None:
    """Close this thread's connections that cannot be reused: left inside a transaction, or broken."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None:
            continue
        if connection.in_atomic_block or not connection.get_autocommit():
            connection.close()  # work that raised inside atomic() left it half way
        elif connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()
