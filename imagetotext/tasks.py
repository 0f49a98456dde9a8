"""What runs a job: a django-q2 worker, or the web process for a synchronous request.

A job waiting on a remote backend does not hold a worker process: the worker hands it to a
pool of threads in its own process (Conf.JOBS_PER_WORKER of them) and takes its next task at
once, so the agents' concurrency, not the number of processes, decides how much runs. The
built-in OCR is CPU-bound and keeps running in the worker process itself, one job at a time.
When a job ends, the thread that ran it assigns the next waiting jobs and runs those itself,
without a trip through the broker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection
from django_q.conf import Conf as QConf

from agents.clients.base import AgentCancelled, AgentError, AgentUnavailable, TextRequest, TextResult
from agents.clients.registry import client_for
from agents.health import check_agent
from agents.models import Agent, Kind
from imagetotext import images
from imagetotext.conf import Conf
from imagetotext.dispatch import candidates, dispatch
from imagetotext.jobs import change, complete, expire_unservable, fail, sweep
from imagetotext.live import publish_text
from imagetotext.models import InvalidTransition, Job, State

log = logging.getLogger(__name__)

OCR_TASKS = {"ocr", "ocr_with_region"}
# How often a running job looks for a cancellation and saves its partial text.
CHECK_EVERY = 1.0
# People need no more than a few refreshes a second; API streams get every chunk.
PUBLISH_EVERY = 0.15

# Called with each piece of text as the backend sends it (a streaming API client listens).
Relay = Callable[[str], None]


def run_job(job_id: int, inline: bool = False) -> None:
    """The django-q2 task: start an assigned job, on this worker's threads unless it must run here."""
    if inline or QConf.SYNC:  # django-q2's sync mode (tests, debugging) runs everything in place
        run_assigned(job_id)
    else:
        in_flight().submit(run_in_thread, job_id)


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def in_flight() -> ThreadPoolExecutor:
    """This process's pool of job threads, made on first use (and anew in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(Conf.JOBS_PER_WORKER, thread_name_prefix="job"))
        return _pool[1]


def run_in_thread(job_id: int) -> None:
    try:
        run_assigned(job_id, take_here=take_here, own_connection=True)
    except Exception:  # noqa: BLE001 - a pool thread has nobody to report to but the log
        log.exception("Job %s could not be run", job_id)
    finally:
        connection.close()  # each pool thread has its own database connection


def take_here(job_id: int) -> bool:
    in_flight().submit(run_in_thread, job_id)
    return True


def run_for_request(job_id: int, relay: Relay | None = None) -> bool:
    """For a synchronous request: run its job in this process now if a slot is free; True if it ran.

    Waiting jobs are assigned as usual (oldest first); when this one gets an agent, the caller's
    thread runs it, without a broker or a poll between the request and the backend.
    """
    taken: list[int] = []

    def take(candidate: int) -> bool:
        if candidate == job_id:
            taken.append(candidate)
        return candidate == job_id

    try:
        dispatch(take)
        # The web's threads are few, so the connection stays open for the job's last writes.
        return bool(taken) and run_assigned(job_id, relay)
    finally:
        connection.close()  # the caller's thread is one of asgiref's, not a request's


def run_assigned(
    job_id: int,
    relay: Relay | None = None,
    take_here: Callable[[int], bool] | None = None,
    own_connection: bool = False,
) -> bool:
    """Run one job on the agent the scheduler chose, then free its slot; False if it was not ours to run.

    own_connection: the calling thread's database connection is its own (a job thread), so it
    is closed while the job waits on its backend: in-flight jobs then hold no connections, and
    many of them cannot exhaust PostgreSQL's max_connections.
    """
    job = Job.objects.select_related("agent", "image").filter(pk=job_id).first()
    if job is None or job.state != State.QUEUED or job.agent is None:
        return False  # cancelled or reassigned while it waited
    agent = job.agent
    try:
        change(job, State.STARTED, attempts=job.attempts + 1, status=f"Running on {agent.name}")
    except InvalidTransition:
        return False
    try:
        run_on_agent(job, agent, relay, own_connection)
    finally:
        dispatch(take_here)
    return True


def run_on_agent(job: Job, agent: Agent, relay: Relay | None = None, own_connection: bool = False) -> None:
    stream = TextStream(job, relay, own_connection)
    try:
        request = text_request(job, agent)
        if own_connection:
            connection.close()
        result = client_for(agent).image_to_text(request, on_text=stream)
        stream.flush()
    except AgentCancelled:
        return
    except AgentError as error:
        handle_failure(job, agent, error)
        return
    except Exception as error:  # noqa: BLE001 - a bug must fail the job, not leave it running
        log.exception("Job %s crashed on %s", job.pk, agent)
        fail_quietly(job, f"Internal error: {error}", "Exception")
        return
    finish(job, result)


def text_request(job: Job, agent: Agent) -> TextRequest:
    """The job's image prepared for this backend: upright, resized, re-encoded."""
    ocr = agent.kind == Kind.LOCAL or job.florence_task in OCR_TASKS
    longest = Conf.OCR_LONGEST_SIDE if ocr else Conf.RESIZE_LONGEST_SIDE
    assert job.image is not None, "a job is queued with its image"
    with job.image.file.open("rb") as handle:
        data, _ = images.prepare(handle.read(), longest)
    return TextRequest(image=data, model=job.model, prompt=job.prompt, task=job.florence_task, options=job.options)


class TextStream:
    """The on_text of a running job: relays each piece, publishes the text now and then,
    saves it and looks for a cancellation about once a second."""

    def __init__(self, job: Job, relay: Relay | None = None, own_connection: bool = False) -> None:
        self.job, self.relay, self.own_connection = job, relay, own_connection
        self.text, self.published = "", ""
        self.published_at = float("-inf")
        self.checked_at = time.monotonic()

    def __call__(self, text: str) -> bool:
        """Take the whole text so far; True means the job is no longer running: stop."""
        if self.relay is not None and len(text) > len(self.text):
            self.relay(text[len(self.text) :])
        self.text = text
        if text and time.monotonic() - self.published_at >= PUBLISH_EVERY:
            self.publish()
        if time.monotonic() - self.checked_at < CHECK_EVERY:
            return False
        self.checked_at = time.monotonic()
        running = Job.objects.filter(pk=self.job.pk, state=State.STARTED)
        stopped = not (running.update(output=text) if text else running.exists())
        if self.own_connection:
            connection.close()  # not held between checks; see run_assigned
        return stopped

    def publish(self) -> None:
        self.published, self.published_at = self.text, time.monotonic()
        publish_text(self.job.pk, self.job.owner_id, self.text)

    def flush(self) -> None:
        """Publish the last text if the throttle held it back."""
        if self.text != self.published:
            self.publish()


def finish(job: Job, result: TextResult) -> None:
    try:
        complete(
            job,
            output=result.text,
            result=result.raw,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            status=State.COMPLETED,
        )
    except InvalidTransition:
        pass  # cancelled while the last words arrived: the cancellation stands


def handle_failure(job: Job, agent: Agent, error: AgentError) -> None:
    """Fail over to another agent when that can help, else fail the job with the reason."""
    if isinstance(error, AgentUnavailable):
        agent.mark_offline(str(error))
    elif error.retry_elsewhere:
        check_agent(agent)  # e.g. the model vanished: let discovery notice now
    tried = [*job.tried_agents, agent.pk]
    others = candidates(job.model, exclude=tried) if error.retry_elsewhere else []
    try:
        if others and job.attempts < Conf.MAX_ATTEMPTS:
            change(job, State.QUEUED, agent=None, tried_agents=tried, status=f"Retrying: {agent.name} failed: {error}")
        else:
            fail(job, f"{agent.name}: {error}", type(error).__name__, tried_agents=tried)
    except InvalidTransition:
        pass


def fail_quietly(job: Job, message: str, code: str) -> None:
    try:
        fail(job, message, code)
    except InvalidTransition:
        pass


def dispatch_periodically() -> list[int]:
    """The scheduled safety net: recover jobs of stopped workers, give up on unservable ones, assign the rest."""
    if swept := sweep():
        log.warning("Recovered %d jobs from stopped workers", swept)
    if expired := expire_unservable():
        log.warning("Gave up on %d jobs whose model no active agent offers", expired)
    return dispatch()
