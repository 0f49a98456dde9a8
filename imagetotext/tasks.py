"""What runs a job: a django-q2 worker, or the web process for a synchronous request.

A job waiting on a remote backend does not hold a worker process: the worker hands it to a
pool of threads in its own process (Conf.JOBS_PER_WORKER of them) and takes its next task at
once, so the agents' concurrency, not the number of processes, decides how much runs. The
built-in OCR is CPU-bound and keeps running in the worker process itself, one job at a time.
When a job ends, the thread that ran it assigns the next waiting jobs and runs those itself,
without a trip through the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.conf import Conf as QConf

from agents.clients.base import AgentCancelled, AgentError, AgentUnavailable, TextRequest, TextResult
from agents.clients.registry import client_for
from agents.health import check_agent
from agents.models import Agent, Kind
from imagetotext import db_threads, images, leases
from imagetotext.callbacks import send_overdue
from imagetotext.conf import Conf
from imagetotext.db_threads import hold_no_connection
from imagetotext.dispatch import (
    Assignment,
    TakeHere,
    assign_waiting_jobs,
    candidates,
    dispatch,
    hand_on,
    hand_over,
    work_to_assign,
)
from imagetotext.jobs import change, complete, expire_unservable, fail, take_up_expired
from imagetotext.live import publish_text
from imagetotext.models import InvalidTransition, Job, State, StoredImage, jobs_with_agent_and_image

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
    """This process's pool of job threads, made on first use (and anew in a forked child).

    Job threads wait on backends and hold no database connection: their database work is
    done on the process's database threads (imagetotext.db_threads).
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            pool = ThreadPoolExecutor(Conf.JOBS_PER_WORKER, thread_name_prefix="job", initializer=hold_no_connection)
            _pool = (os.getpid(), pool)
        return _pool[1]


def run_in_thread(job_id: int) -> None:
    try:
        run_assigned(job_id, take_here=take_here)
    except Exception:  # noqa: BLE001 - a pool thread has nobody to report to but the log
        log.exception("Job %s could not be run", job_id)
    finally:
        connection.close()  # if a rare path (a health check after a failure) opened one here


def take_here(job_id: int) -> bool:
    in_flight().submit(run_in_thread, job_id)
    return True


async def run_for_request(job: Job, relay: Relay | None = None) -> Job:
    """For a synchronous request whose job was started as it was created (job.runs_here): run it
    on this process's job threads now, without a broker between the request and the backend.

    Returns the job as it ended.
    """
    return await asyncio.get_running_loop().run_in_executor(in_flight(), run_requested, job, relay)


def run_requested(job: Job, relay: Relay | None) -> Job:
    try:
        return run_started(job, relay)
    finally:
        connection.close()  # if a rare path opened one here


def run_assigned(job_id: int, relay: Relay | None = None, take_here: TakeHere | None = None) -> Job | None:
    """Start one job on the agent the scheduler chose, run it, then free its slot.

    Returns the job as it ended, or None if it was not ours to run (cancelled or reassigned
    while it waited).
    """
    job = db_threads.run(start, job_id)
    return None if job is None else run_started(job, relay, take_here)


def start(job_id: int) -> Job | None:
    """The assigned job, moved to Started; None if it is no longer ours to run."""
    job = next(iter(jobs_with_agent_and_image([job_id])), None)
    return job if job is not None and started(job) else None


def started(job: Job) -> bool:
    """Move an assigned job to Started on its agent; False if it is no longer ours to run."""
    if job.state != State.QUEUED or job.agent is None:
        return False
    try:
        change(
            job,
            State.STARTED,
            attempts=job.attempts + 1,
            status=f"Running on {job.agent.name}",
            lease_until=leases.lease_end(),
            expect=Q(agent=job.agent),  # not assigned afresh meanwhile (its assignment ran out)
        )
    except InvalidTransition:
        return False
    return True


def run_started(job: Job, relay: Relay | None = None, take_here: TakeHere | None = None) -> Job:
    """Run a started job on its agent, then save how it ended and hand its slot on.

    While it runs, this process's heartbeat renews the job's lease; the outcome is saved
    only if the lease is still this run's (Job.move_to checks the attempt).
    """
    assert job.agent is not None, "a started job has its agent"
    attempt = job.attempts
    leases.holder.hold(job, reclaim=reclaim)
    settle: Settle = nothing_to_save
    try:
        settle = run_on_agent(job, job.agent, relay)
    finally:
        try:
            db_threads.run(end_run, job, attempt, settle, take_here)
        finally:
            leases.holder.let_go(job.pk, attempt)  # if saving failed, the lease runs out and the job is taken up
    return job


# The database work that records how a run ended.
Settle = Callable[[], None]


def nothing_to_save() -> None:
    pass


def end_run(job: Job, attempt: int, settle: Settle, take_here: TakeHere | None) -> None:
    """Save how the run ended, let go of its lease, give the freed slot to the oldest waiting job
    the agent can run (dispatch.hand_on) and start that job, in one transaction.

    Between the two, no other dispatcher (a request, another worker) can see the slot free and
    send a job to it the slow way, through the broker; the job taken here is started in the same
    write and its backend request is sent as soon as this commits, with no second transaction
    (on SQLite, a second wait for the write lock) in between.
    """
    ran_on = job.agent_id  # a failover's save clears it
    with transaction.atomic():
        settle()
        if not (job.attempts == attempt and job.lease_until is None):  # the outcome's save let go already
            leases.let_go(job.pk, attempt)
        assigned = next_assignments(ran_on if job.finished else None)
        here = start_here(assigned) if take_here is not None else []
    hand_over([a for a in assigned if a.job_id not in {j.pk for j in here}], take_here)
    for next_job in here:
        leases.holder.hold(next_job, reclaim=reclaim)  # renewed from now, even while it waits for a thread
        in_flight().submit(run_started_in_thread, next_job)


# Whether the last slot handed on in this process found a taker: while the queue stays full, a
# finished job tries hand_on first, without asking work_to_assign (one statement less for each,
# the one that cost most under load). With an empty queue the question is asked first, as the
# cheaper of the two. A hint only: threads racing on it cost a statement, never a slot.
_queue_full = False


def next_assignments(ended_on: int | None) -> list[Assignment]:
    """The waiting jobs to assign as a run ends: the slot of a job that ended on agent ended_on
    goes straight on (dispatch.hand_on). A job sent back to the queue (failover, ended_on None)
    needs another agent, and a slot with no taker may meet another waiting job: then, if some
    free slot meets a waiting job, the whole queue is dispatched under the dispatch lock. Never
    after claiming a row here (PostgreSQL: a dispatcher holding the lock may be waiting on that
    row, and the two would wait on each other); hand_on claims only when it assigns.
    """
    global _queue_full
    if ended_on is not None and _queue_full:
        if assigned := hand_on(ended_on):
            return assigned
        _queue_full = False
        ended_on = None  # asked already
    if not work_to_assign():
        return []
    if ended_on is not None and (assigned := hand_on(ended_on)):
        _queue_full = True
        return assigned
    return assign_waiting_jobs()


def start_here(assigned: list[Assignment]) -> list[Job]:
    """Start the newly assigned remote jobs in the transaction that assigned them; the ones started."""
    remote = [a.job_id for a in assigned if not a.local]
    if not remote:
        return []
    return [job for job in jobs_with_agent_and_image(remote) if started(job)]


def run_started_in_thread(job: Job) -> None:
    try:
        run_started(job, take_here=take_here)
    except Exception:  # noqa: BLE001 - as in run_in_thread
        log.exception("Job %s could not be run", job.pk)
    finally:
        connection.close()


def reclaim() -> None:
    """The heartbeat's second half: take up the jobs of processes that died, and run them here."""
    if db_threads.run(take_up_expired):
        db_threads.run(dispatch, take_here)
    db_threads.run(send_overdue)  # callbacks due, or whose sender died


def run_on_agent(job: Job, agent: Agent, relay: Relay | None = None) -> Settle:
    """Send the job to its agent and return what records the outcome (saved by the caller)."""
    stream = TextStream(job, relay)
    try:
        request = text_request(job, agent)
        # No last text update: the job's end, published next, carries all of its text.
        result = client_for(agent).image_to_text(request, on_text=stream)
    except AgentCancelled:
        if stream.cut:  # it stopped reading at the cap: the job has what it keeps
            return partial(finish, job, TextResult(stream.text), cut_short=True, first_token_at=stream.first_text_at)
        return nothing_to_save
    except AgentError as error:
        look_at_agent(agent, error)  # here, not on a database thread: it may check the agent over HTTP
        return partial(fail_over_or_fail, job, agent, error)
    except Exception as error:  # noqa: BLE001 - a bug must fail the job, not leave it running
        log.exception("Job %s crashed on %s", job.pk, agent)
        return partial(fail_quietly, job, f"Internal error: {error}", "Exception")
    return partial(finish, job, result, first_token_at=stream.first_text_at)


def text_request(job: Job, agent: Agent) -> TextRequest:
    """The job's image prepared for this backend: upright, resized to the preset's longest side (or
    the default for this kind of task), re-encoded."""
    ocr = agent.kind == Kind.LOCAL or job.florence_task in OCR_TASKS
    longest = job.longest_side or (Conf.OCR_LONGEST_SIDE if ocr else Conf.RESIZE_LONGEST_SIDE)
    prepared = job.prepared
    if prepared is not None and prepared.longest_side == longest:
        data = prepared.data  # a synchronous request's upload, prepared as it was checked
    else:
        assert job.image is not None, "a job is queued with its image"
        data = prepared_for(job.image, longest)
    more = tuple(prepared_for(image, longest) for image in job.stored_images()[1:]) if job.image_count > 1 else ()
    return TextRequest(
        image=data,
        model=job.model,
        prompt=job.prompt,
        task=job.florence_task,
        options=job.options,
        more_images=more,
        messages=tuple(job.messages),
    )


def prepared_for(image: StoredImage, longest: int) -> bytes:
    with image.file.open("rb") as handle:
        return images.prepare(handle.read(), longest)[0]


class TextStream:
    """The on_text of a running job: relays each piece, publishes the text now and then,
    saves it and looks for a cancellation about once a second.

    The text the throttle held back at the end is not published as text: the job's end is
    published right after, and whoever listens reads the whole text from the ended job (the
    page redraws its card, an API stream sends the rest with its last line). One update fewer
    per job for every listener, and none sent while the job's end is being saved.
    """

    def __init__(self, job: Job, relay: Relay | None = None) -> None:
        self.job, self.relay = job, relay
        self.attempt = job.attempts
        self.cut = False
        self.text = ""
        self.published_at = float("-inf")
        self.first_text_at: datetime | None = None  # kept in memory, saved with the outcome
        self.checked_at = time.monotonic()

    def __call__(self, text: str) -> bool:
        """Take the whole text so far; True means stop: the job is no longer running, or the text
        reached Conf.MAX_OUTPUT_CHARS (no point in keeping a backend busy with what is thrown away)."""
        if len(text) > Conf.MAX_OUTPUT_CHARS:
            text, self.cut = text[: Conf.MAX_OUTPUT_CHARS], True
        if text and self.first_text_at is None:
            self.first_text_at = timezone.now()
        if self.relay is not None and len(text) > len(self.text):
            self.relay(text[len(self.text) :])
        self.text = text
        if text and time.monotonic() - self.published_at >= PUBLISH_EVERY:
            self.publish()
        if self.cut:
            return True
        if time.monotonic() - self.checked_at < CHECK_EVERY:
            return False
        self.checked_at = time.monotonic()
        return db_threads.run(self.stopped, text)

    def stopped(self, text: str) -> bool:
        """Save the text so far; True if the job is no longer running (cancelled)."""
        running = Job.objects.filter(pk=self.job.pk, state=State.STARTED, attempts=self.attempt)
        return not (running.update(output=text) if text else running.exists())

    def publish(self) -> None:
        self.published_at = time.monotonic()
        publish_text(self.job.pk, self.job.owner_id, self.text)


def finish(job: Job, result: TextResult, cut_short: bool = False, first_token_at: datetime | None = None) -> None:
    text, status = result.text, str(State.COMPLETED)
    if cut_short or len(text) > Conf.MAX_OUTPUT_CHARS:
        text, status = cut(text), f"Completed; the answer was cut at {Conf.MAX_OUTPUT_CHARS:,} characters"
    try:
        complete(
            job,
            output=text,
            result=result.raw,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            status=status,
            lease_until=None,
            # A backend that answers all at once (or with nothing) sent its first text as it ended.
            first_token_at=first_token_at or timezone.now(),
        )
    except InvalidTransition:
        pass  # cancelled while the last words arrived: the cancellation stands


def cut(text: str) -> str:
    """The text a job keeps of an answer that reached the cap, saying that it was cut."""
    return text[: Conf.MAX_OUTPUT_CHARS] + f"\n\n[The answer was cut here, at {Conf.MAX_OUTPUT_CHARS:,} characters.]"


def look_at_agent(agent: Agent, error: AgentError) -> None:
    """After a failure: mark the agent offline if it did not answer, or check it again if it may have changed."""
    try:
        if isinstance(error, AgentUnavailable):
            agent.mark_offline(str(error))
        elif error.retry_elsewhere:
            check_agent(agent)  # e.g. the model vanished: let discovery notice now
    except DatabaseError:
        if db_threads.run(Agent.objects.filter(pk=agent.pk).exists):
            raise
        log.warning("Agent %s was removed while job threads used it", agent)  # its jobs still end


def fail_over_or_fail(job: Job, agent: Agent, error: AgentError) -> None:
    """Queue the job again for another agent when that can help, else fail it with the reason."""
    tried = [*job.tried_agents, agent.pk]
    others = candidates(job.model, exclude=tried) if error.retry_elsewhere else []
    try:
        if others and job.attempts < Conf.MAX_ATTEMPTS:
            status = f"Retrying: {agent.name} failed: {error}"
            change(job, State.QUEUED, agent=None, tried_agents=tried, status=status, lease_until=None)
        else:
            fail(job, f"{agent.name}: {error}", type(error).__name__, tried_agents=tried, lease_until=None)
    except InvalidTransition:
        pass


def fail_quietly(job: Job, message: str, code: str) -> None:
    try:
        fail(job, message, code, lease_until=None)
    except InvalidTransition:
        pass


def dispatch_periodically() -> list[int]:
    """The scheduled safety net: take up jobs of stopped processes, give up on unservable ones, assign the rest."""
    if taken := take_up_expired():
        log.warning("Took up %d jobs whose process stopped", taken)
    if expired := expire_unservable():
        log.warning("Gave up on %d jobs whose model no active agent offers", expired)
    send_overdue()  # callbacks due, or whose sender died
    return dispatch()
