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
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf

from aiserver import doorbell


def doorbells() -> Path:
    return Path(settings.DATA_DIR) / "run"


class DoorbellORM(ORM):
    _bell: tuple[int, socket.socket | None] | None = None

    def enqueue(self, task: Any) -> Any:
        task_id = super().enqueue(task)
        ring()
        return task_id

    def dequeue(self) -> Any:
        """The ORM broker's dequeue, waiting for a bell (at most `poll` seconds) when there is nothing."""
        tasks = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())[0 : Conf.BULK]
        if not tasks:
            self.wait(Conf.POLL)
            return None  # the pusher asks again at once
        return self.claim(tasks)

    def claim(self, tasks: Any) -> list[tuple[Any, Any]]:
        """The ORM broker's own claim: lock each task unless another cluster was faster."""
        claimed = []
        for task in tasks:
            if self.get_connection().filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                claimed.append((task.pk, task.payload))
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
