"""What the django-q2 workers run: one job on its agent, with failover."""

from __future__ import annotations

import logging
import time

from agents.base import AgentCancelled, AgentError, AgentUnavailable, OnText, TextRequest, TextResult
from agents.health import check_agent, client_for
from agents.models import Agent, Kind
from imagetotext import images
from imagetotext.conf import Conf
from imagetotext.jobs import change, complete, expire_unservable, fail, sweep
from imagetotext.live import publish_text
from imagetotext.models import InvalidTransition, Job, State
from imagetotext.scheduling import candidates, dispatch

log = logging.getLogger(__name__)

OCR_TASKS = {"ocr", "ocr_with_region"}
# How often a running job looks for a cancellation and saves its partial text.
CHECK_EVERY = 1.0


def run_job(job_id: int) -> None:
    """Run one job on the agent the scheduler chose, then free its slot."""
    job = Job.objects.select_related("agent", "image").filter(pk=job_id).first()
    if job is None or job.state != State.QUEUED or job.agent is None:
        return  # cancelled or reassigned while it waited
    agent = job.agent
    try:
        change(job, State.STARTED, attempts=job.attempts + 1, status=f"Running on {agent.name}")
    except InvalidTransition:
        return
    try:
        run_on_agent(job, agent)
    finally:
        dispatch()


def run_on_agent(job: Job, agent: Agent) -> None:
    try:
        result = client_for(agent).image_to_text(text_request(job, agent), on_text=streamer(job))
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
    with job.image.file.open("rb") as handle:
        data, _ = images.prepare(handle.read(), longest)
    return TextRequest(image=data, model=job.model, prompt=job.prompt, task=job.florence_task, options=job.options)


def streamer(job: Job) -> OnText:
    """Publishes text as it arrives; now and then saves it and looks for a cancellation."""
    last_check = time.monotonic()

    def on_text(text: str) -> bool:
        nonlocal last_check
        if text:
            publish_text(job.pk, job.owner_id, text)
        if time.monotonic() - last_check < CHECK_EVERY:
            return False
        last_check = time.monotonic()
        running = Job.objects.filter(pk=job.pk, state=State.STARTED)
        # No row updated or found means the job is no longer running: stop.
        return not (running.update(output=text) if text else running.exists())

    return on_text


def finish(job: Job, result: TextResult) -> None:
    try:
        complete(
            job, output=result.text, result=result.raw, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, status=State.COMPLETED,
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

