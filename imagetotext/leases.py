"""Leases: a job holds its agent's slot only while the process running it is alive.

A job gets a lease when it is assigned (Conf.ASSIGNED_LEASE_SECONDS) and again when it starts
(Conf.LEASE_SECONDS). While it runs, its process's heartbeat renews the lease every third of
that, in one statement for all the process's jobs. When a process dies (SIGKILL, OOM, a
reboot) its leases run out, and any process's heartbeat (or the scheduled safety net) takes
the jobs up again: a started one is queued for another attempt (at most Conf.MAX_ATTEMPTS),
an assigned one that never started is assigned afresh. The run that ends a job lets its lease
go in the same statement that saves the outcome, so a cancelled job keeps its slot until the
backend request has really ended.

The heartbeat of a django-q2 worker also writes the worker's WorkerHeartbeat row, which
/readyz counts: a worker is alive while its row is recent.

A run whose lease ran out cannot end the job someone else took up: a started job changes only
on the attempt that was read (Job.move_to), so each job ends once and sends one callback.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from imagetotext import db_threads
from imagetotext.conf import Conf
from imagetotext.models import Job, WorkerHeartbeat

log = logging.getLogger(__name__)

# What the heartbeat calls after it renewed this process's leases: takes up expired jobs.
Reclaim = Callable[[], object]

# A worker writes its heartbeat row at most this often (its lease heartbeat may beat faster);
# it counts as alive for three beats, and rows older than WORKER_STALE_SECONDS are deleted.
WORKER_BEAT_SECONDS = 5.0
WORKER_STALE_SECONDS = 300


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
        self.worker: Worker | None = None  # set in a django-q2 worker: its heartbeat row

    def start(self, reclaim: Reclaim | None = None, worker: bool = False) -> None:
        """Make sure this process's heartbeat runs (a worker starts it as it is spawned, worker=True)."""
        with self.lock:
            self._start(reclaim, worker)

    def _start(self, reclaim: Reclaim | None, worker: bool = False) -> None:
        if reclaim is not None:
            self.reclaim = reclaim
        fresh = self.pid != os.getpid()  # first use, or a forked child: its own heartbeat
        if fresh:
            self.held, self.pid, self.worker = {}, os.getpid(), None
        if worker and self.worker is None:
            self.worker = Worker()
        if fresh:
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
        self.beat_as_worker()  # at once: a worker is counted alive before its first lease renewal
        while not self.wake.wait(Conf.LEASE_SECONDS / 3) and os.getpid() == pid:
            try:
                db_threads.run(renew, self.holding())
                if self.reclaim is not None:
                    self.reclaim()
            except Exception:  # noqa: BLE001 - the database may be away for a while; beat again later
                log.exception("Could not renew the leases of running jobs")
            self.beat_as_worker()

    def beat_as_worker(self) -> None:
        worker = self.worker
        if worker is None or not worker.due():
            return
        try:
            db_threads.run(worker.record)
        except Exception:  # noqa: BLE001 - as above
            log.exception("Could not record this worker's heartbeat")


class Worker:
    """This worker process's heartbeat row (host:pid), written at most every WORKER_BEAT_SECONDS."""

    def __init__(self) -> None:
        self.name = f"{socket.gethostname()[:180]}:{os.getpid()}"
        self.started_at = timezone.now()
        self.recorded = -WORKER_BEAT_SECONDS  # time.monotonic() of the last write
        self.purged = 0.0

    def due(self) -> bool:
        return time.monotonic() - self.recorded >= WORKER_BEAT_SECONDS

    def record(self) -> None:
        """Upsert the row; now and then also delete the rows of workers gone for a while."""
        now = timezone.now()
        fields = {"beat_at": now, "started_at": self.started_at}
        if not WorkerHeartbeat.objects.filter(name=self.name).update(**fields):
            try:
                with transaction.atomic():  # a savepoint, as in store_image
                    WorkerHeartbeat.objects.create(name=self.name, **fields)
            except IntegrityError:
                WorkerHeartbeat.objects.filter(name=self.name).update(**fields)
        self.recorded = time.monotonic()
        if self.recorded - self.purged >= WORKER_STALE_SECONDS / 5:
            WorkerHeartbeat.objects.filter(beat_at__lt=now - timedelta(seconds=WORKER_STALE_SECONDS)).delete()
            self.purged = self.recorded


def alive_workers() -> int:
    """Worker processes whose heartbeat is recent (three beats)."""
    beat = max(WORKER_BEAT_SECONDS, Conf.LEASE_SECONDS / 3)
    return WorkerHeartbeat.objects.filter(beat_at__gte=timezone.now() - timedelta(seconds=3 * beat)).count()


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
