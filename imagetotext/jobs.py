"""A job's life: submitted, run elsewhere, then completed, failed, cancelled or retried.

Every change goes through Job.move_to and is followed by a live update; a job
that ends with a ReplyTo URL gets its callback queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import AgentModel, Task
from imagetotext.callbacks import queue_callback
from imagetotext.conf import Conf
from imagetotext.live import publish_change
from imagetotext.images import UploadedImage
from imagetotext.models import Api, ApiKey, InvalidTransition, Job, State, StoredImage, store_image
from imagetotext.scheduling import dispatch

FLORENCE_TASKS_NEEDING_TEXT = {"referring_expression_segmentation", "caption_to_phrase_grounding", "docvqa"}


class JobRefused(Exception):
    """A request that cannot become a job; status and code follow AI Server."""

    def __init__(self, message: str, status: int = 400, code: str = "ArgumentException", field: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.field = message, status, code, field


@dataclass
class JobRequest:
    """What a client asked for, before it is checked."""

    owner: Any
    image: StoredImage | None
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


def resolve_model(requested: str) -> AgentModel:
    """The model a request names: exact, Ollama's ':latest', or a Florence short name.

    No model means Florence-2 on ComfyUI, as in AI Server. Models of disabled or
    offline agents are still found, so that the caller hears "no active agent" (405).
    """
    known = AgentModel.objects.exclude(task=Task.TEXT).select_related("agent")
    known = known.order_by("-agent__enabled", "-agent__online", "-agent__priority")
    if not requested:
        florence = known.filter(task=Task.FLORENCE2)
        usable = florence.filter(agent__enabled=True, agent__online=True)
        match = usable.filter(name=Conf.DEFAULT_FLORENCE_MODEL).first() or usable.first() or florence.first()
        if match is None:
            raise JobRefused(
                "No model was named and no ComfyUI agent offers Florence-2; name a model from /api/ActiveAiModels",
                405, "NotSupportedException", "Model",
            )
        return match
    for name in (requested, f"{requested}:latest"):
        if match := known.filter(name=name).first():
            return match
    if match := known.filter(name__endswith="/" + requested).first():
        return match
    if AgentModel.objects.filter(name=requested, task=Task.TEXT).exists():
        raise JobRefused(f"The model {requested} cannot read images", 400, "ArgumentException", "Model")
    raise JobRefused(f"Model {requested} not found", 404, "NotFound", "Model")


def check(request: JobRequest) -> dict[str, Any]:
    """Everything that can refuse a request, before anything is written; returns the job's fields."""
    model = resolve_model(request.model)
    if not AgentModel.objects.usable().filter(name=model.name).exists():
        raise JobRefused(f"No active agent supports the model {model.name}", 405, "NotSupportedException", "Model")
    if request.ref_id and Job.objects.filter(owner=request.owner, ref_id=request.ref_id).exists():
        raise JobRefused(f"RefId {request.ref_id} is already in use", 400, "ArgumentException", "RefId")
    return job_fields(request, model)


def submit(request: JobRequest, fields: dict[str, Any] | None = None) -> Job:
    """Store the job and let the scheduler pick an agent once it is committed."""
    fields = {**(fields or check(request)), "image": request.image}
    try:
        with transaction.atomic():
            job = Job.objects.create(**fields)
    except IntegrityError:
        raise JobRefused(f"RefId {request.ref_id} is already in use", 400, "ArgumentException", "RefId") from None
    transaction.on_commit(lambda: announce(job))
    transaction.on_commit(dispatch)
    return job


def submit_upload(request: JobRequest, upload: UploadedImage) -> Job:
    """Store the uploaded image and its job together; a refusal leaves neither behind."""
    fields = check(request)
    stored, created = None, False
    try:
        with transaction.atomic():
            stored, created = store_image(upload.data, upload.content_type, upload.width, upload.height)
            request.image = stored
            return submit(request, fields)
    except Exception:
        if created and stored is not None:
            stored.file.delete(save=False)  # the row rolled back; do not leave its file
        raise


def job_fields(request: JobRequest, model: AgentModel) -> dict[str, Any]:
    prompt, task = request.prompt.strip(), ""
    if model.task == Task.FLORENCE2:
        task = request.florence_task or Conf.DEFAULT_FLORENCE_TASK
        if task not in model.details.get("tasks", [task]):
            raise JobRefused(f"Unknown Florence-2 task {task!r}", 400, "ArgumentException", "Task")
        prompt = prompt if task in FLORENCE_TASKS_NEEDING_TEXT else ""
    elif model.task == Task.VISION and not prompt:
        prompt = Conf.DEFAULT_PROMPT
    fields = {
        "owner": request.owner, "api_key": request.api_key, "api": request.api, "image": request.image,
        "model": model.name, "prompt": prompt, "florence_task": task, "options": request.options,
        "tag": request.tag[:100], "reply_to": request.reply_to, "reply_state": request.reply_state,
    }
    if request.ref_id:
        fields["ref_id"] = request.ref_id[:100]
    return fields


def announce(job: Job) -> None:
    publish_change(job.pk, job.owner_id, job.state)


def change(job: Job, state: str, **fields: Any) -> None:
    """Move the job, tell listeners, and queue its callback when it ended."""
    job.move_to(state, **fields)
    announce(job)
    if job.finished:
        # After commit, so a worker on another broker never reads the job before it ended.
        transaction.on_commit(lambda: queue_callback(job))


def complete(job: Job, **fields: Any) -> None:
    change(job, State.COMPLETED, error="", error_code="", **fields)


def fail(job: Job, message: str, code: str = "Exception", **fields: Any) -> None:
    change(job, State.FAILED, error=message, error_code=code, **fields)


def cancel(job: Job) -> bool:
    """Cancel a job that has not finished; False if it already had."""
    for _ in range(3):
        if job.finished:
            return False
        try:
            change(job, State.CANCELLED, error_code="Cancelled", error="The job was cancelled.", status="Cancelled")
        except InvalidTransition:
            continue  # the worker moved it meanwhile; look again
        transaction.on_commit(dispatch)
        return True
    return False


def retry(job: Job) -> None:
    """Run a finished job again from the start, on whichever agent is free."""
    resolve_model(job.model)
    change(
        job, State.QUEUED, agent=None, attempts=0, tried_agents=[], output="", result={}, error="",
        error_code="", prompt_tokens=None, completion_tokens=None, started_at=None, finished_at=None,
        status=State.QUEUED,
    )
    transaction.on_commit(dispatch)


def sweep() -> int:
    """Free the slots of jobs whose worker died; returns how many jobs were touched."""
    limit = timezone.now() - timedelta(seconds=settings.TASK_TIMEOUT + 60)
    lost = list(Job.objects.filter(state=State.STARTED, started_at__lt=limit))
    for job in lost:
        fail(job, "The worker running this job stopped before it finished.", "WorkerLost")
    stale = Job.objects.filter(state=State.QUEUED, agent__isnull=False, queued_at__lt=limit)
    return len(lost) + stale.update(agent=None, status=State.QUEUED)


def expire_unservable() -> int:
    """Fail jobs that waited Conf.QUEUE_WAIT_SECONDS for a model no online agent offers; returns how many.

    Jobs behind busy agents keep waiting: only a model nobody can run is given up on.
    """
    limit = timezone.now() - timedelta(seconds=Conf.QUEUE_WAIT_SECONDS)
    offered = AgentModel.objects.usable().accepting_images().values("name")
    waiting = Job.objects.filter(state=State.QUEUED, agent__isnull=True, queued_at__lt=limit).exclude(model__in=offered)
    expired = 0
    for job in waiting:
        message = f"No active agent offered {job.model} for {Conf.QUEUE_WAIT_SECONDS / 60:g} minutes; the job was given up."
        try:
            fail(job, message, "NotSupportedException")
        except InvalidTransition:
            continue  # picked up or cancelled meanwhile
        expired += 1
    return expired
