"""Crashes with real processes: a worker SIGKILLed mid-job, every process killed and restarted,
and a chaos run that kills a worker every 15 s under 1,000 queued jobs.

Leases are 2 s here (JOB_LEASE_SECONDS), so a dead process's jobs are taken up within seconds.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.cluster import Cluster, callback_receiver, cluster, job_runners, kill_job_runners, until
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.slow


class CountingOllama(FakeOllama):
    """Counts the generate requests it answers at once (health checks come on top: they hold no slot)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.generating = self.most_generating = 0

    async def _generate(self, request):  # type: ignore[no-untyped-def]
        self.generating += 1
        self.most_generating = max(self.most_generating, self.generating)
        try:
            return await super()._generate(request)
        finally:
            self.generating -= 1


def generate_requests(fake: FakeOllama) -> int:
    return sum(1 for request in fake.requests if request.path == "/api/generate")


def wait_until_all_completed(running: Cluster, count: int, seconds: float) -> list[dict]:
    def done() -> bool:
        jobs = running.jobs()
        return len(jobs) == count and all(job["state"] == "Completed" for job in jobs)

    until(done, seconds, f"{count} jobs to complete")
    return running.jobs()


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_job_completes_it_once_with_one_callback(tmp_path: Path) -> None:
    with FakeOllama(chunk_delay=0.1) as fake, callback_receiver() as callbacks:  # about 2 s per answer
        with cluster(tmp_path, [fake.url]) as running:
            worker = running.start_worker()
            with running.api() as api:
                queued = running.submit(api, callbacks.url)
            until(lambda: fake.in_flight == 1, 30, "the job to reach the backend")

            killed = kill_job_runners(worker, fake.port)
            assert killed, "no worker process held the backend request"
            started = time.monotonic()
            [job] = wait_until_all_completed(running, 1, 60)
            took = time.monotonic() - started
            until(lambda: len(callbacks.received) >= 1, 30, "the callback")
            time.sleep(1)  # room for a duplicate to show up

    assert job["attempts"] == 2, job
    assert job["lease_until"] in (None, "None")
    assert generate_requests(fake) == 2
    assert fake.max_in_flight == 1
    [delivery] = callbacks.received
    assert delivery["refId"] == queued["refId"] and delivery["textOutputs"][0]["text"]
    assert took < 30, f"took {took:.1f} s to complete after the kill"


@pytest.mark.timeout(300)
def test_every_process_killed_then_restarted_resumes_queued_and_running_jobs(tmp_path: Path) -> None:
    jobs = 4
    with FakeOllama(chunk_delay=0.1) as fake, callback_receiver() as callbacks:
        with cluster(tmp_path, [fake.url]) as running:
            running.start_worker()
            with running.api() as api:
                refs = [running.submit(api, callbacks.url)["refId"] for _ in range(jobs)]
            until(lambda: fake.in_flight == 1, 30, "the first job to reach the backend")

            running.kill_everything()  # a power cut: the web process and the whole worker cluster
            running.start_web()
            running.start_worker()

            finished = wait_until_all_completed(running, jobs, 90)
            until(lambda: len(callbacks.by_ref_id()) == jobs, 60, "every callback")
            time.sleep(1)

    assert generate_requests(fake) <= jobs + 1  # only the one in flight ran twice
    assert sum(job["attempts"] for job in finished) <= jobs + 1
    assert fake.max_in_flight == 1
    seen = callbacks.by_ref_id()
    assert sorted(seen) == sorted(refs)
    assert all(len(deliveries) == 1 for deliveries in seen.values()), seen


@pytest.mark.timeout(900)
def test_chaos_1000_jobs_while_a_worker_is_killed_every_15_seconds(tmp_path: Path) -> None:
    jobs, concurrency = 1000, 2
    fakes = [CountingOllama(chunk_delay=0.01) for _ in range(2)]  # about 0.2 s per answer
    with fakes[0], fakes[1], callback_receiver() as callbacks:
        with cluster(tmp_path, [fake.url for fake in fakes], concurrency=concurrency) as running:
            workers = [running.start_worker(), running.start_worker()]
            stop_killing = threading.Event()
            kills: list[int] = []

            def killer() -> None:
                chooser = random.Random(15)
                while not stop_killing.wait(15):
                    running_jobs = sorted(job_runners(workers, [fake.port for fake in fakes]))
                    if running_jobs:
                        victim = chooser.choice(running_jobs)
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)

            thread = threading.Thread(target=killer, daemon=True)
            with running.api() as api:
                thread.start()
                refs = {running.submit(api, callbacks.url)["refId"] for _ in range(jobs)}
            try:
                finished = wait_until_all_completed(running, jobs, 600)
            finally:
                stop_killing.set()
                thread.join()
            until(lambda: len(callbacks.by_ref_id()) == jobs, 180, "every callback")
            time.sleep(2)

    requests = sum(generate_requests(fake) for fake in fakes)
    attempts = sum(job["attempts"] for job in finished)
    seen = callbacks.by_ref_id()
    duplicates = sum(len(deliveries) - 1 for deliveries in seen.values())
    print(
        f"\nchaos: {jobs} jobs, {len(kills)} kills, {requests} backend requests, {attempts} starts, "
        f"{duplicates} duplicate callbacks (same key), most at once per agent {[f.most_generating for f in fakes]}"
    )
    assert len(kills) >= 2, "the run should have seen several kills"
    assert set(seen) == refs
    # Every callback of a job carries the one key of its one delivery: a receiver drops repeats.
    assert all(len({d["key"] for d in deliveries}) == 1 for deliveries in seen.values())
    assert all(fake.most_generating <= concurrency for fake in fakes)
    # Each extra request is a run taken up after a kill: at most the slots of the killed process.
    assert requests <= attempts <= jobs + len(kills) * concurrency * len(fakes)
