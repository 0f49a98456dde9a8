"""A job's life: submitted, run elsewhere, then completed, failed, cancelled or retried.

Every change goes through Job.move_to and is followed by a live update; a job
that ends with a ReplyTo URL owes its callback, recorded in the same transaction
(imagetotext.callbacks).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from agents.clients import florence
from agents.models import Agent, AgentModel, Capability, Kind
from imagetotext import leases, rows
from imagetotext.callbacks import owe, owing
from imagetotext.conf import Conf
from imagetotext.dispatch import (
    Assignment,
    agent_for_new_job,
    assign_waiting_jobs,
    dispatch,
    hand_over,
    waiting_status,
    work_to_assign,
)
from imagetotext.errors import Refusal
from imagetotext.images import UploadedImage
from imagetotext.leases import lease_end
from imagetotext.live import publish_change
from imagetotext.models import Api, ApiKey, InvalidTransition, Job, JobImage, Preset, State, StoredImage, store_image

log = logging.getLogger(__name__)


@dataclass
class JobRequest:
    """What a client asked for, before it is checked."""

    owner: Any
    model: str = ""
    prompt: str = ""
    florence_task: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    ref_id: str = ""
    tag: str = ""
    reply_to: str = ""
    reply_state: str = ""
    api: str = Api.IMAGE_TO_TEXT
    api_key: ApiKey | None = None
    path: str = ""  # the upload's file name, sanitised
    # The preset asked for: its prompt, Florence task and longest side stand in for missing ones.
    preset: Preset | None = None
    # How many images the request carries (the jobs of a vision model may have several).
    image_count: int = 1
    # A chat: its messages as Ollama's /api/chat takes them, each one's "images" as positions in
    # the request's images. Only vision models take part in a chat; the others read the image.
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class JobSpec:
    """A request that passed every check: the fields of the jobs to create from it, one per image."""

    fields: dict[str, Any]
    ref_id: str = ""


def resolve_model(requested: str, named: list[AgentModel] | None = None) -> AgentModel:
    """The model a request names: exact, Ollama's ':latest', or a Florence short name.

    No model means Florence-2 on ComfyUI, as in AI Server. Models of disabled or
    offline agents are still found, so that the caller hears "no active agent" (405).
    named: what named_models(requested) read, if the caller has it.
    """
    if not requested:
        known = AgentModel.objects.exclude(capability=Capability.TEXT).select_related("agent")
        return default_florence_model(known.order_by("-agent__enabled", "-agent__online", "-agent__priority"))
    named = named_models(requested) if named is None else named
    for_images = [model for model in named if model.capability != Capability.TEXT]
    for name in (requested, f"{requested}:latest"):
        if match := next((model for model in for_images if model.name == name), None):
            return match
    if match := next((model for model in for_images if model.name.endswith("/" + requested)), None):
        return match
    if any(model.name == requested for model in named):  # only models that cannot read images have it
        raise Refusal(f"The model {requested} cannot read images", 400, "ArgumentException", "Model")
    raise Refusal(f"Model {requested} not found", 404, "NotFound", "Model")


def named_models(requested: str) -> list[AgentModel]:
    """Every agent's models a request's model name may mean (exact, ':latest', '…/name'), each
    with its agent, best agent first: one statement written once, where resolving the name and
    asking whether an agent is usable took up to four ORM queries on every lookup not kept."""
    escaped = connection.ops.prep_for_like_query(requested)
    found = rows.fetch(NAMED_MODELS_SQL, [requested, f"{requested}:latest", f"%/{escaped}"], AgentModel, Agent)
    for model, agent in found:
        model.agent = agent
    return [model for model, _ in found]


def _named_models_sql() -> str:
    quote = connection.ops.quote_name
    model, agent = quote(AgentModel._meta.db_table), quote(Agent._meta.db_table)
    return (
        f"SELECT {rows.columns(AgentModel, 'm')}, {rows.columns(Agent, 'a')} FROM {model} m"
        f" JOIN {agent} a ON a.id = m.agent_id WHERE m.name = %s OR m.name = %s OR m.name LIKE %s ESCAPE '\\'"
        " ORDER BY a.enabled DESC, a.online DESC, a.priority DESC, m.agent_id, m.name"
    )


NAMED_MODELS_SQL = _named_models_sql()


def usable_model(requested: str) -> AgentModel:
    """resolve_model, refused with 405 when no enabled, online agent offers the model.

    Every submission asks this, and the answer changes only when agents do: it is kept per
    process for Conf.MODEL_LOOKUP_SECONDS, and forgotten at once when this process saves or
    deletes an agent or a model (other processes' changes are seen within that time).
    """
    now = time.monotonic()
    with _lookups_lock:
        known = _lookups.get(requested)
    if known is not None and now - known[0] < Conf.MODEL_LOOKUP_SECONDS:
        answer = known[1]
    else:
        try:
            named = named_models(requested) if requested else None
            model = resolve_model(requested, named)
            if named is not None:
                usable = any(m.name == model.name and m.agent.enabled and m.agent.online for m in named)
            else:
                usable = AgentModel.objects.usable().filter(name=model.name).exists()
            if not usable:
                raise Refusal(f"No active agent supports the model {model.name}", 405, "NotSupportedException", "Model")
            answer = model
        except Refusal as refusal:
            answer = refusal
        with _lookups_lock:
            _lookups[requested] = (now, answer)
    if isinstance(answer, Refusal):  # a fresh one: other threads may be raising the kept one
        raise Refusal(answer.message, answer.status, answer.code, answer.field)
    return answer


_lookups: dict[str, tuple[float, AgentModel | Refusal]] = {}
_lookups_lock = threading.Lock()


@receiver([post_save, post_delete], sender=Agent)
@receiver([post_save, post_delete], sender=AgentModel)
def forget_model_lookups(**kwargs: Any) -> None:
    with _lookups_lock:
        _lookups.clear()


def default_florence_model(known: QuerySet[AgentModel]) -> AgentModel:
    florence = known.filter(capability=Capability.FLORENCE2)
    usable = florence.filter(agent__enabled=True, agent__online=True)
    match = usable.filter(name=Conf.DEFAULT_FLORENCE_MODEL).first() or usable.first() or florence.first()
    if match is None:
        raise Refusal(
            "No model was named and no ComfyUI agent offers Florence-2; name a model from /api/ActiveAiModels",
            405,
            "NotSupportedException",
            "Model",
        )
    return match


def validate(request: JobRequest) -> JobSpec:
    """Everything that can refuse a request, before anything is written."""
    model = usable_model(request.model)
    if request.ref_id and Job.objects.filter(owner=request.owner, ref_id=request.ref_id).exists():
        raise ref_id_in_use(request.ref_id)
    return JobSpec(job_fields(request, model), request.ref_id)


def create(spec: JobSpec, image: StoredImage, hand_to_workers: bool = True) -> Job:
    """Store the job for one image and assign waiting jobs to free agents in the same transaction
    (one write, where a dispatch after the commit was a second); once committed, the assigned jobs
    go to the workers.

    A synchronous request passes hand_to_workers=False: if this job gets a remote agent it is
    started at once and job.runs_here tells the caller to run it itself
    (imagetotext.tasks.run_for_request); every other assigned job goes to the workers.
    """
    mine = None
    try:
        # No savepoint of its own: a clash of RefIds fails the caller's whole transaction anyway.
        with transaction.atomic(savepoint=False):
            job = Job(**spec.fields, image=image)
            new = agent_for_new_job(job)
            if new.agent is not None and not hand_to_workers and new.agent.kind != Kind.LOCAL:
                job.agent = new.agent
                job.begin_as(State.STARTED, attempts=1, status=f"Running on {new.agent.name}", lease_until=lease_end())
                job.runs_here = True
            elif new.agent is not None:
                job.agent, job.status = new.agent, waiting_status(new.agent)
                job.lease_until = lease_end(Conf.ASSIGNED_LEASE_SECONDS)
            rows.insert(job)  # written once: the ORM's INSERT was compiled for every job
            if new.decided:  # the queue was empty: this job was all there was to assign
                assigned = [] if new.agent is None or job.runs_here else [Assignment(job.pk, new.agent)]
            else:
                assigned = assign_waiting_jobs() if work_to_assign() else []
                mine = (
                    None if hand_to_workers else next((a for a in assigned if a.job_id == job.pk and not a.local), None)
                )
                if mine is not None:
                    job.agent = mine.agent
                    job.move_to(
                        State.STARTED, attempts=1, status=f"Running on {mine.agent.name}", lease_until=lease_end()
                    )
                    job.runs_here = True
    except IntegrityError:
        raise ref_id_in_use(spec.ref_id) from None
    transaction.on_commit(lambda: publish_change(job.pk, job.owner_id, job.state, created=True))
    if others := [a for a in assigned if a is not mine]:
        transaction.on_commit(lambda: hand_over(others))
    return job


def create_with_upload(
    spec: JobSpec, upload: UploadedImage, hand_to_workers: bool = True, more: Sequence[UploadedImage] = ()
) -> Job:
    """Store the uploaded image (and any more of the request's) and its job together; a refusal
    leaves none of them behind."""
    assert spec.fields.get("image_count", 1) == 1 + len(more), "validate() was told how many images"
    new_files: list[StoredImage] = []

    def stored(image: UploadedImage) -> StoredImage:
        row, created = store_image(image.data, image.content_type, image.width, image.height)
        if created:
            new_files.append(row)
        return row

    try:
        with transaction.atomic():
            # Every image row first: create() then takes the dispatch lock, and a transaction holding
            # it must not wait on another's uncommitted image row (the same picture sent at once).
            first, later = stored(upload), [stored(image) for image in more]
            job = create(spec, first, hand_to_workers)
            for position, row in enumerate(later, 1):
                JobImage.objects.create(job=job, image=row, position=position)
            # Decode checks still running beside this transaction: a broken image rolls it all back.
            for image in (upload, *more):
                image.check()
        job.prepared = upload.prepared
        return job
    except Exception:
        for row in new_files:
            row.file.delete(save=False)  # the row rolled back; do not leave its file
        raise


def ref_id_in_use(ref_id: str) -> Refusal:
    return Refusal(f"RefId {ref_id} is already in use", 400, "ArgumentException", "RefId")


def job_fields(request: JobRequest, model: AgentModel) -> dict[str, Any]:
    prompt, task, preset = request.prompt.strip(), "", request.preset
    if model.capability == Capability.FLORENCE2:
        tasks = model.details.get("tasks")
        task = request.florence_task or (preset.florence_task_on(tasks or []) if preset else "")
        task = task or florence.DEFAULT_TASK
        if task not in (tasks or [task]):
            raise Refusal(f"Unknown Florence-2 task {task!r}", 400, "ArgumentException", "Task")
        prompt = prompt if task in florence.TEXT_INPUT_TASKS else ""
    elif model.capability == Capability.VISION:
        prompt = prompt or (preset.prompt if preset else "") or Conf.DEFAULT_PROMPT
    if request.image_count > Conf.MAX_IMAGES_PER_REQUEST:
        raise Refusal(
            f"A request may hold at most {Conf.MAX_IMAGES_PER_REQUEST} images", 400, "ArgumentException", "images"
        )
    if request.image_count > 1 and model.capability != Capability.VISION:
        raise Refusal(
            f"The model {model.name} reads one image per request; send the images one at a time",
            400,
            "ArgumentException",
            "images",
        )
    fields = {
        "owner": request.owner,
        "api_key": request.api_key,
        "api": request.api,
        "model": model.name,
        "prompt": prompt,
        "florence_task": task,
        "options": request.options,
        "tag": request.tag[:100],
        "reply_to": request.reply_to,
        "reply_state": request.reply_state,
        "path": request.path[:500],
        "longest_side": preset.longest_side if preset else None,
        "image_count": request.image_count,
        "messages": request.messages if model.capability == Capability.VISION else [],
    }
    if request.ref_id:
        fields["ref_id"] = request.ref_id[:100]
    return fields


def change(job: Job, state: str, **fields: Any) -> None:
    """Move the job, tell listeners, and owe its callback when it ended."""
    with owing(state):  # the end and the callback it owes are committed together, or neither
        job.move_to(state, **fields)
        if job.finished:
            owe(job)
            if job.batch_id:
                from imagetotext import batches  # batches builds on this module

                batches.job_ended(job)
    # Once committed, as a listener reads the job when it hears of the change (outside a transaction: at once).
    moved_to = job.state
    transaction.on_commit(lambda: publish_change(job.pk, job.owner_id, moved_to))
    if job.finished:
        transaction.on_commit(lambda: log_outcome(job))  # not while holding the write


def log_outcome(job: Job) -> None:
    """One line per finished job, naming the process that finished it (operators grep for it)."""
    duration = f"{job.duration:.2f} s" if job.duration is not None else "-"
    agent = job.agent.name if job.agent_id and job.agent else "-"
    log.info("Job %s %s: model %s, agent %s, %s, pid %d", job.pk, job.state, job.model, agent, duration, os.getpid())


def complete(job: Job, **fields: Any) -> None:
    change(job, State.COMPLETED, error="", error_code="", **fields)


def fail(job: Job, message: str, code: str = "Exception", **fields: Any) -> None:
    change(job, State.FAILED, error=message, error_code=code, **fields)


def cancel(job: Job) -> bool:
    """Cancel a job that has not finished; False if it already had.

    A queued job frees its slot at once; a started one keeps it until its run has ended the
    backend request and let go of the lease (imagetotext.leases).
    """
    for _ in range(3):
        if job.finished:
            return False
        unstarted = {"lease_until": None} if job.state == State.QUEUED else {}
        try:
            change(
                job,
                State.CANCELLED,
                error_code="Cancelled",
                error="The job was cancelled.",
                status="Cancelled",
                **unstarted,
            )
        except InvalidTransition:
            continue  # the worker moved it meanwhile; look again
        transaction.on_commit(dispatch)
        return True
    return False


def retry(job: Job) -> None:
    """Run a finished job again from the start, on whichever agent is free."""
    resolve_model(job.model)
    change(
        job,
        State.QUEUED,
        agent=None,
        attempts=0,
        tried_agents=[],
        output="",
        result={},
        error="",
        error_code="",
        prompt_tokens=None,
        completion_tokens=None,
        started_at=None,
        finished_at=None,
        lease_until=None,
        status=State.QUEUED,
    )
    transaction.on_commit(dispatch)


def take_up_expired() -> int:
    """Jobs whose process stopped renewing their lease (it died): take them up again; returns how many.

    A started job is queued for another attempt, or failed after Conf.MAX_ATTEMPTS or once it
    has run for TASK_TIMEOUT; an assigned job that was never started is assigned afresh; an
    ended job's slot is freed. Each change is conditional on the lease as it was read, so a
    holder that renewed meanwhile keeps its job.
    """
    taken = 0
    for job in leases.expired():
        same_lease = Q(lease_until=job.lease_until)
        if job.state == State.STARTED:
            taken += take_up(job, same_lease)
        elif job.state == State.QUEUED:
            taken += Job.objects.filter(same_lease, pk=job.pk, state=State.QUEUED).update(
                agent=None, lease_until=None, status=State.QUEUED
            )
        else:
            taken += Job.objects.filter(same_lease, pk=job.pk, state=job.state).update(lease_until=None)
    return taken


def take_up(job: Job, same_lease: Q) -> int:
    agent = job.agent.name if job.agent else "its agent"
    ran_since = timezone.now() - timedelta(seconds=settings.TASK_TIMEOUT)
    try:
        if job.started_at and job.started_at < ran_since:
            fail(
                job,
                f"The job ran for more than {settings.TASK_TIMEOUT} s.",
                "Timeout",
                lease_until=None,
                expect=same_lease,
            )
        elif job.attempts < Conf.MAX_ATTEMPTS:
            status = f"Queued again: the process running it on {agent} stopped"
            change(job, State.QUEUED, agent=None, lease_until=None, status=status, expect=same_lease)
        else:
            message = f"The process running this job stopped before it finished, {job.attempts} times."
            fail(job, message, "WorkerLost", lease_until=None, expect=same_lease)
    except InvalidTransition:
        return 0  # it ended, or its holder renewed the lease meanwhile
    log.warning("Job %s: the process running it on %s stopped; %s", job.pk, agent, job.status)
    return 1


def expire_unservable() -> int:
    """Fail jobs that waited Conf.QUEUE_WAIT_SECONDS for a model no online agent offers; returns how many.

    Jobs behind busy agents keep waiting: only a model nobody can run is given up on.
    """
    limit = timezone.now() - timedelta(seconds=Conf.QUEUE_WAIT_SECONDS)
    offered = AgentModel.objects.usable().accepting_images().values("name")
    waiting = Job.objects.filter(state=State.QUEUED, agent__isnull=True, queued_at__lt=limit).exclude(model__in=offered)
    expired = 0
    for job in waiting:
        message = (
            f"No active agent offered {job.model} for {Conf.QUEUE_WAIT_SECONDS / 60:g} minutes; the job was given up."
        )
        try:
            fail(job, message, "NotSupportedException")
        except InvalidTransition:
            continue  # picked up or cancelled meanwhile
        expired += 1
    return expired
