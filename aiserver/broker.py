"""django-q2's ORM broker, with a doorbell: a new task wakes the waiting workers at once.

The ORM broker's pusher looks for tasks every `poll` seconds, so in the embedded
configuration a job queued while a slot is free waited up to that long before a worker saw
it. Here each process that waits for tasks binds a Unix datagram socket in DATA_DIR/run/,
and enqueue() sends a byte to each of them after the task row is written; the wait ends at
once. The poll stays as the fallback (a bell lost or rung before its task was committed).
Redis, the scale-out broker, blocks on its list and needs none of this.
"""

from __future__ import annotations

import os
import select
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from aiserver import doorbell


def doorbells() -> Path:
    return Path(settings.DATA_DIR) / "run"


class DoorbellORM(ORM):
    _bell: tuple[int, socket.socket | None] | None = None

    def enqueue(self, task: Any) -> Any:
        task_id = super().enqueue(task)
        ring()
        return task_id

    @staticmethod
    def get_connection(list_key: str | None = None) -> Any:
        """The task table, on a connection kept open: django-q2's closes and reopens it at every
        call (CONN_MAX_AGE is 0), three times per task. Only a broken connection is closed."""
        connection = connections[Conf.ORM or DEFAULT_DB_ALIAS]
        if connection.in_atomic_block:
            return OrmQ.objects.using(Conf.ORM)
        if connection.connection is not None and connection.errors_occurred and not connection.is_usable():
            connection.close()
        connection.errors_occurred = False
        return OrmQ.objects.using(Conf.ORM)

    def dequeue(self) -> Any:
        """Claim up to `bulk` tasks, waiting for a bell (at most `poll` seconds) when there is none."""
        claimed = self.claim()
        if not claimed:
            self.wait(Conf.POLL)
            return None  # the pusher asks again at once
        return claimed

    def claim(self) -> list[tuple[Any, Any]]:
        """Lock the oldest tasks for this cluster, in one write transaction.

        The ORM broker's own claim is a conditional update per task, each a write of its own: on
        SQLite each waited for the write lock behind every other process's writes, and a burst of
        jobs reached the workers at ten a second. Here the select and the update are in one
        transaction, so another cluster cannot take the same tasks in between.
        """
        with transaction.atomic(using=Conf.ORM):
            tasks = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())
            claimed = list(tasks.order_by("id").values_list("id", "payload")[: Conf.BULK])
            if claimed:
                until = timezone.now() + timedelta(seconds=Conf.RETRY)
                self.get_connection().filter(id__in=[pk for pk, _ in claimed]).update(lock=until)
        return claimed

    def wait(self, seconds: float) -> None:
        """Until a bell rings or `seconds` pass; every bell rung meanwhile is taken."""
        bell = self.bell()
        if bell is None:
            select.select([], [], [], seconds)
            return
        readable, _, _ = select.select([bell], [], [], seconds)
        if readable:
            doorbell.silence(bell)

    def bell(self) -> socket.socket | None:
        """This process's doorbell, bound on first use (anew in a forked child)."""
        if DoorbellORM._bell is None or DoorbellORM._bell[0] != os.getpid():
            DoorbellORM._bell = (os.getpid(), doorbell.bind(doorbells(), doorbell.pid_name("q")))
        return DoorbellORM._bell[1]


def ring() -> None:
    """Wake every process waiting for tasks."""
    doorbell.ring(doorbells())
