"""django-q2's worker cluster, made to survive a process killed outright (SIGKILL, the OOM killer).

A cluster's workers share one multiprocessing queue, and an idle worker holds the queue's
reader lock while it waits for a task. Killed then, it takes the lock with it: the worker
django-q2 spawns in its place and every other worker wait for that lock forever, and the
cluster never runs a task again (a killed pusher or monitor can leave a queue as broken).
So here, when any process of a cluster dies without being asked to, the cluster's sentinel
stops all of them and starts them afresh on new queues. Their jobs are taken up again when
their leases run out (imagetotext.leases); tasks that sat in the old queue are covered the same
way (an assigned job's lease) or by the callbacks' outbox.

Recycled workers and workers django-q2 itself stops after a task timeout keep django-q2's
own handling: neither was waiting on the queue.
"""

from __future__ import annotations

import logging
from typing import Any

from django_q import cluster
from django_q.conf import Conf
from django_q.queues import Queue

log = logging.getLogger(__name__)

# django-q2's worker timer values: recycled after its task count, or out of time on a task.
RECYCLED, TIMED_OUT = -2, 0


def install() -> None:
    """Patch django-q2's Sentinel (in every process: a cluster's sentinel is forked from it)."""
    sentinel: Any = cluster.Sentinel
    if getattr(sentinel, "restarts_after_sudden_death", False):
        return
    respawn = sentinel.reincarnate

    def reincarnate(self: Any, process: Any) -> None:
        if not (process in self.pool or process is self.monitor or process is self.pusher):
            return  # a process of the cluster as it was before a restart
        if process in self.pool and process.timer.value in (RECYCLED, TIMED_OUT):
            respawn(self, process)
        else:
            restart(self, process)

    sentinel.reincarnate = reincarnate
    sentinel.restarts_after_sudden_death = True


def restart(sentinel: Any, dead: Any) -> None:
    """Stop every process of the cluster and start them again on new queues."""
    log.critical("%s died suddenly: restarting every process of its cluster on fresh queues", dead.name)
    processes = [p for p in [*sentinel.pool, sentinel.monitor, sentinel.pusher] if p is not None]
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(5)
    sentinel.task_queue = Queue(maxsize=Conf.QUEUE_LIMIT) if Conf.QUEUE_LIMIT else Queue()
    sentinel.result_queue = Queue()
    sentinel.spawn_cluster()
    sentinel.reincarnations += 1
