"""Leases: a job holds its agent's slot only while the process running it is alive.

A job gets a lease when it is assigned (Conf.ASSIGNED_LEASE_SECONDS) and again when it starts
(Conf.LEASE_SECONDS). While it runs, its process's heartbeat renews the lease every third of
that, in one statement for all the process's jobs. When a process dies (SIGKILL, OOM, a
reboot) its leases run out, and any process's heartbeat (or the scheduled safety net) takes
the jobs up again: a started one is queued for another attempt (at most Conf.MAX_ATTEMPTS),
an assigned one that never started is assigned afresh. The run that ends a job lets its lease
go in the same statement that saves the outcome, so a cancelled job keeps its slot until the
backend request has really ended.

A run whose lease ran out cannot end the job someone else took up: a started job changes only
on the attempt that was read (Job.move_to), so each job ends once and sends one callback.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from imagetotext import db_threads
from imagetotext.conf import Conf
from imagetotext.models import Job

log = logging.getLogger(__name__)

# What the heartbeat calls after it renewed this process's leases: takes up expired jobs.
Reclaim = Callable[[], object]


def lease_end(seconds: float | None = None) -> datetime:
    return timezone.now() + timedelta(seconds=Conf.LEASE_SECONDS if seconds is None else seconds)


class Holder:
    """The jobs this process runs (job id → attempt), and the heartbeat thread that renews their leases."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, int] = {}
        self.pid = 0
        self.wake = threading.Event()
        self.reclaim: Reclaim | None = None

    def start(self, reclaim: Reclaim | None = None) -> None:
        """Make sure this process's heartbeat runs (a worker starts it as it is spawned)."""
        with self.lock:
            self._start(reclaim)

    def _start(self, reclaim: Reclaim | None) -> None:
        if reclaim is not None:
            self.reclaim = reclaim
        if self.pid != os.getpid():  # first use, or a forked child: its own heartbeat
            self.held, self.pid = {}, os.getpid()
            threading.Thread(target=self.beat, name="lease-heartbeat", daemon=True).start()

    def hold(self, job: Job, reclaim: Reclaim | None = None) -> None:
        with self.lock:
            self._start(reclaim)
            self.held[job.pk] = job.attempts

    def let_go(self, job_id: int, attempt: int) -> None:
        with self.lock:
            if self.held.get(job_id) == attempt:
                del self.held[job_id]

    def holding(self) -> dict[int, int]:
        with self.lock:
            return dict(self.held)

    def beat(self) -> None:
        db_threads.hold_no_connection()
        pid = os.getpid()
        while not self.wake.wait(Conf.LEASE_SECONDS / 3) and os.getpid() == pid:
            try:
                db_threads.run(renew, self.holding())
                if self.reclaim is not None:
                    self.reclaim()
            except Exception:  # noqa: BLE001 - the database may be away for a while; beat again later
                log.exception("Could not renew the leases of running jobs")


holder = Holder()


def renew(held: dict[int, int]) -> int:
    """Push the leases of these runs (job id → attempt) forward; returns how many are still ours.

    A run past TASK_TIMEOUT is not renewed: its thread is stuck, and the job is failed when
    the lease runs out.
    """
    if not held:
        return 0
    ours = reduce(or_, (Q(pk=pk, attempts=attempts) for pk, attempts in held.items()))
    stuck = timezone.now() - timedelta(seconds=settings.TASK_TIMEOUT)
    running = Job.objects.filter(ours, lease_until__isnull=False).exclude(started_at__lt=stuck)
    return running.update(lease_until=lease_end())


def let_go(job_id: int, attempt: int) -> None:
    """The run ended without its outcome letting go (cancelled meanwhile, or the save failed): free the slot."""
    Job.objects.filter(pk=job_id, attempts=attempt, lease_until__isnull=False).update(lease_until=None)


def expired() -> list[Job]:
    """Jobs whose holder stopped renewing: started, assigned but never started, or ended but not let go."""
    return list(Job.objects.filter(lease_until__lt=timezone.now()).select_related("agent"))
