"""Jobs, the images they read, API keys and callback deliveries."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, models
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from imagetotext import rows


class State(models.TextChoices):
    """AI Server's job states (ServiceStack's BackgroundJobState)."""

    QUEUED = "Queued"
    STARTED = "Started"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


FINISHED = {State.COMPLETED, State.FAILED, State.CANCELLED}
# The Florence-2 task (of the PromptGen fine-tunes) that answers the tags preset with tags.
TAGS_TASK = "prompt_gen_tags"
# Started -> Queued is a retry on another agent; a finished job goes back to
# Queued only when someone asks to run it again.
TRANSITIONS: dict[str, set[str]] = {
    State.QUEUED: {State.STARTED, State.FAILED, State.CANCELLED},
    State.STARTED: {State.QUEUED, State.COMPLETED, State.FAILED, State.CANCELLED},
    State.COMPLETED: {State.QUEUED},
    State.FAILED: {State.QUEUED},
    State.CANCELLED: {State.QUEUED},
}


class InvalidTransition(Exception):
    pass


class Api(models.TextChoices):
    IMAGE_TO_TEXT = "ImageToText"
    OLLAMA_GENERATION = "OllamaGeneration"
    OLLAMA_CHAT = "OllamaChat"
    OPENAI_CHAT = "OpenAiChat", "OpenAI chat completions"


def image_path(image: StoredImage, filename: str) -> str:
    return f"images/{image.sha256[:2]}/{image.sha256}{image.extension}"


class StoredImage(models.Model):
    """An uploaded image, kept once per content hash however often it is sent."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(upload_to=image_path, max_length=200)
    content_type = models.CharField(max_length=50)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size = models.PositiveIntegerField(help_text="Bytes as uploaded.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "image"

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.width}×{self.height})"

    @property
    def extension(self) -> str:
        return {"image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}.get(self.content_type, ".jpg")


def new_ref_id() -> str:
    return uuid.uuid4().hex


class JobQuerySet(models.QuerySet["Job"]):
    def owned_by(self, user: Any) -> JobQuerySet:
        return self.filter(owner=user)

    def active(self) -> JobQuerySet:
        return self.exclude(state__in=FINISHED)


class Job(models.Model):
    # Not stored: set by jobs.create when a synchronous request's job got an agent to run it on,
    # and the upload as it was prepared for a backend when the request was read (images.Prepared).
    runs_here = False
    prepared: Any = None

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    api_key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    api = models.CharField(max_length=30, choices=Api.choices, default=Api.IMAGE_TO_TEXT)
    ref_id = models.CharField("ref id", max_length=100, default=new_ref_id)
    tag = models.CharField(max_length=100, blank=True)
    batch = models.ForeignKey("Batch", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    path = models.CharField(
        max_length=500, blank=True, help_text="The file's name as uploaded (sanitised), with its folder inside a ZIP."
    )

    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, editable=False)
    status = models.CharField(max_length=200, blank=True, help_text="What is happening now, in words.")

    image = models.ForeignKey(StoredImage, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs")
    model = models.CharField(max_length=200)
    prompt = models.TextField(blank=True)
    florence_task = models.CharField(max_length=50, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Extra backend options (Ollama generate fields).")
    longest_side = models.PositiveIntegerField(
        null=True, blank=True, help_text="The preset's longest side for the image sent; empty: the default."
    )
    # A request may carry several images (a vision model that reads more than one): the first is
    # `image`, the others are JobImage rows; image_count says how many, so one image costs no query.
    image_count = models.PositiveSmallIntegerField(default=1)
    # A chat (Ollama's /api/chat, OpenAI's chat completions): its messages as Ollama takes them,
    # each message's images as positions in the job's images. Empty: one prompt, as generate.
    messages = models.JSONField(default=list, blank=True)

    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    attempts = models.PositiveSmallIntegerField(default=0)
    tried_agents = models.JSONField(default=list, blank=True)

    output = models.TextField(blank=True)
    # A batch item's caption as the user edited it (None: not edited); exports use it. The
    # model's own text stays in output.
    edited_text = models.TextField(null=True, blank=True)
    # For a batch that appends: the caption the same image already had, which this one extends.
    earlier_text = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="The backend's final reply.")
    error_code = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)

    reply_to = models.URLField(max_length=2000, blank=True)
    reply_state = models.CharField(max_length=2000, blank=True, help_text="The client's State, echoed in the callback.")

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Since when it waits: reset when a retry or failover puts it back in the queue.
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the backend's first text arrived (the run's time to first token), saved with its outcome.
    first_token_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set while a process holds the job's agent slot (assigned, or running on the backend),
    # renewed by that process's heartbeat; expired, the job is taken up again (imagetotext.leases).
    # A cancelled job keeps its slot until the backend request has really ended.
    lease_until = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "ref_id"], name="one_ref_id_per_owner")]
        indexes = [
            models.Index(fields=["state", "created_at"]),
            models.Index(fields=["agent", "state"]),
            models.Index(fields=["model", "state"]),  # is a job waiting for this model (dispatch.work_to_assign)
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now while running)."""
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    @property
    def tokens_per_second(self) -> float | None:
        seconds = self.duration
        if not self.completion_tokens or not seconds:
            return None
        return self.completion_tokens / seconds

    def move_to(self, state: str, **fields: Any) -> None:
        """The one place a job changes state: checked, timestamped and saved together.

        The update is conditional on the state we read, so a worker finishing a job cannot
        overwrite a cancellation that happened meanwhile; and a started job only on the run we
        read (its attempt), so a run whose lease expired cannot end the run that took it up.
        """
        previous = self.state
        expect = fields.pop("expect", None)  # a further condition (a Q) on the row as it was read
        changes = self.changes_to(state, fields)
        where = {"id": self.pk, "state": previous}
        if previous == State.STARTED:
            where["attempts"] = self.attempts
        if not updated_where(where, expect, changes):
            self.refresh_from_db()
            raise InvalidTransition(f"Job {self.pk} changed to {self.state} meanwhile")
        for name, value in changes.items():
            setattr(self, name, value)

    def changes_to(self, state: str, fields: dict[str, Any]) -> dict[str, Any]:
        """What moving to `state` writes: the state, its status and timestamps, then `fields`."""
        if state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"A {self.state} job cannot become {state}")
        now = timezone.now()
        changes: dict[str, Any] = {"state": state, "status": fit(fields.pop("status", state), STATUS_MAX_LENGTH)}
        if state == State.QUEUED:
            changes["queued_at"] = now
        elif state == State.STARTED:
            changes.update(started_at=now, finished_at=None)
        elif state in FINISHED:
            changes["finished_at"] = now
        changes.update(fields)
        return changes

    def begin_as(self, state: str, **fields: Any) -> None:
        """For a job not saved yet: take the fields move_to(state) would write, to be inserted so."""
        assert self._state.adding, "a saved job moves with move_to"
        for name, value in self.changes_to(state, fields).items():
            setattr(self, name, value)

    def stored_images(self) -> list[StoredImage]:
        """Every image of the job, in the order it was sent."""
        first = [self.image] if self.image is not None else []
        if self.image_count <= 1:
            return first
        return first + [later.image for later in self.later_images.select_related("image")]


# A job's columns by field name and by attribute name (agent and agent_id).
JOB_FIELDS: dict[str, models.Field[Any, Any]] = {
    name: field for field in Job._meta.concrete_fields for name in (field.name, field.attname)
}


def updated_where(where: dict[str, Any], expect: Q | None, changes: dict[str, Any]) -> bool:
    """UPDATE one job's `changes` if its fields equal `where` (and `expect`); whether it did.

    Every state change of every job comes here, so the statement is put together directly from
    the fields, as Django's update compiler would, without building and compiling a query
    (most of what a state change cost). A condition or value it cannot write as
    "column = value" goes through the ORM instead.
    """
    if expect is not None:
        plain = plain_conditions(expect)
        if plain is None or plain.keys() & where.keys() or not plain.keys() <= JOB_FIELDS.keys():
            return bool(Job.objects.filter(expect, **where).update(**changes))
        where = {**where, **plain}
    if any(hasattr(value, "resolve_expression") for value in changes.values()):
        return bool(Job.objects.filter(**where).update(**changes))
    quote = connection.ops.quote_name
    sets, conditions, params = [], [], []
    for name, value in changes.items():
        field = JOB_FIELDS[name]
        sets.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value.pk if isinstance(value, models.Model) else value, connection))
    for name, value in where.items():
        field = JOB_FIELDS[name]
        value = value.pk if isinstance(value, models.Model) else value
        if value is None:
            conditions.append(f"{quote(field.column)} IS NULL")
        else:
            conditions.append(f"{quote(field.column)} = %s")
            params.append(field.get_db_prep_value(value, connection))
    sql = f"UPDATE {quote(Job._meta.db_table)} SET {', '.join(sets)} WHERE {' AND '.join(conditions)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount > 0


def plain_conditions(q: Q) -> dict[str, Any] | None:
    """A Q of "field equals value" terms joined by AND, as a dict; None for anything else."""
    if q.negated or q.connector != Q.AND:
        return None
    terms: dict[str, Any] = {}
    for child in q.children:
        if not isinstance(child, tuple) or "__" in child[0] or child[0] in terms:
            return None
        terms[child[0]] = child[1]
    return terms


class JobImage(models.Model):
    """A job's second and later images, in order (the first is Job.image)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="later_images")
    image = models.ForeignKey(StoredImage, on_delete=models.PROTECT, related_name="later_in_jobs")
    position = models.PositiveSmallIntegerField(help_text="1 for the job's second image, 2 for its third...")

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="one_image_per_position")]


class Preset(models.Model):
    """A named way to ask for text: the prompt a vision model gets, and the Florence-2 task instead."""

    key = models.SlugField(max_length=50, unique=True, help_text="The name the API and the page use, e.g. caption.")
    label = models.CharField(max_length=100)
    prompt = models.TextField(help_text="What a vision model (Ollama) is asked.")
    florence_task = models.CharField(max_length=50, help_text="The Florence-2 task run instead of the prompt.")
    longest_side = models.PositiveIntegerField(
        null=True, blank=True, help_text="Resize the image's longest side to this before sending; empty: the default."
    )
    description = models.TextField(blank=True)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order in the page's list.")

    class Meta:
        ordering = ["position", "key"]

    def __str__(self) -> str:
        return self.label

    def florence_task_on(self, tasks: Iterable[str]) -> str:
        """The Florence-2 task that does what the preset asks, on a model that has these tasks."""
        if self.key == "tags" and TAGS_TASK in tasks:
            return TAGS_TASK
        return self.florence_task


class Duplicates(models.TextChoices):
    """What a batch does with an image the owner already had captioned by the same model and prompt."""

    AGAIN = "again", "Run it again"
    REUSE = "reuse", "Skip it and reuse the earlier caption"
    APPEND = "append", "Run it again and append to the earlier caption"


class Batch(models.Model):
    """Jobs sent together (a folder, a ZIP, many files), followed, edited and exported together."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    api_key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="batches")
    ref_id = models.CharField("ref id", max_length=100, default=new_ref_id)
    name = models.CharField(max_length=200, blank=True, help_text="e.g. the ZIP's file name.")
    model = models.CharField(max_length=200)
    prompt = models.TextField(blank=True)
    florence_task = models.CharField(max_length=50, blank=True)
    preset = models.ForeignKey(Preset, null=True, blank=True, on_delete=models.SET_NULL, related_name="batches")
    tag = models.CharField(max_length=100, blank=True)
    # Added around every caption as given (trigger words: include their separator, e.g. "sks, ").
    prefix = models.CharField(max_length=500, blank=True)
    suffix = models.CharField(max_length=500, blank=True)
    duplicates = models.CharField(max_length=10, choices=Duplicates.choices, default=Duplicates.AGAIN)
    reply_to = models.URLField(max_length=2000, blank=True, help_text="Called once, when every item has ended.")
    reply_state = models.CharField(max_length=2000, blank=True)
    total = models.PositiveIntegerField(default=0, help_text="Items that became jobs.")
    # Members or files left out, each {"path": ..., "reason": ...}.
    skipped = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"
        constraints = [models.UniqueConstraint(fields=["owner", "ref_id"], name="one_batch_ref_id_per_owner")]

    def __str__(self) -> str:
        return self.name or f"Batch {self.pk}"


STATUS_MAX_LENGTH = Job._meta.get_field("status").max_length or 200


def fit(text: str, length: int) -> str:
    """Text cut to a column's length (a backend's error can be long), marked as cut."""
    return text if len(text) <= length else text[: length - 1] + "…"


class FailedJob(Job):
    """Failed jobs, for their own admin view."""

    class Meta:
        proxy = True


# What restrict_to may hold: AI Server's request names (ImageToText, QueueImageToText, ...).
API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


class ApiKey(models.Model):
    """A bearer key for the API. Only its hash is stored; the key is shown once."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=12, editable=False, help_text="The start of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    restrict_to = models.JSONField(
        default=list, blank=True, help_text='API names this key may call, e.g. ["ImageToText"]. Empty: all.'
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, owner: Any, name: str, **fields: Any) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the key itself, which is not stored."""
        key = "ak-" + secrets.token_urlsafe(32)
        row = cls.objects.create(owner=owner, name=name, prefix=key[:10], key_hash=cls.hash(key), **fields)
        return row, key

    @property
    def usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @staticmethod
    def invalid_api_names(names: list[str]) -> list[str]:
        """The names that cannot be API names, for restrict_to's checks."""
        return [name for name in names if not API_NAME.fullmatch(name)]

    def allows(self, api: str) -> bool:
        return not self.restrict_to or api in self.restrict_to


class Outcome(models.TextChoices):
    """What one callback attempt came to."""

    DELIVERED = "Delivered"  # answered 2xx
    FAILED = "Failed"  # refused, not connected, not sent in full, or answered otherwise
    UNKNOWN = "Unknown"  # sent in full, then no answer: the receiver may have it


class CallbackAttempt(models.Model):
    """One try at POSTing a finished job (or batch) to its ReplyTo URL."""

    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.CASCADE, related_name="callback_attempts")
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.CASCADE, related_name="callback_attempts")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField(default=timezone.now)
    # One per delivery (a job's end), sent as Idempotency-Key on each of its attempts.
    idempotency_key = models.CharField(max_length=36, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.FAILED)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "number"]

    def __str__(self) -> str:
        return f"Callback {self.number} of {f'batch {self.batch_id}' if self.batch_id else f'job {self.job_id}'}"

    @property
    def delivered(self) -> bool:
        return self.outcome == Outcome.DELIVERED


class DeliveryState(models.TextChoices):
    PENDING = "Pending"  # owed: an attempt is due, running, or waits for its backoff
    DELIVERED = "Delivered"
    GIVEN_UP = "GivenUp", "Given up"  # the last attempt was not delivered, or the ReplyTo is refused
    SUPERSEDED = "Superseded"  # the job was run again: its new end owes a new delivery


class CallbackDelivery(models.Model):
    """A callback owed to a job's ReplyTo: written in the transaction that ends the job, so a crash
    cannot lose it, and sent (at least once, always with its key) by whoever claims it.

    A batch's delivery (batch set, job empty) is owed once every item of the batch has ended."""

    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.CASCADE, related_name="callback_deliveries")
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.CASCADE, related_name="callback_deliveries"
    )
    # Sent as Idempotency-Key on each of its attempts.
    key = models.CharField(max_length=36)
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    # Attempts claimed so far: one that was claimed counts even if its process died sending it.
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    # While pending, the next time anyone may claim it: after a backoff, or when the claim of
    # the process sending it runs out (it died). Empty once settled, so the index holds only work.
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name_plural = "callback deliveries"

    def __str__(self) -> str:
        return f"Callback delivery {self.key} of {f'batch {self.batch_id}' if self.batch_id else f'job {self.job_id}'}"

    @property
    def summary(self) -> str:
        made = f"{self.attempts} attempt{'' if self.attempts == 1 else 's'}"
        if self.state == DeliveryState.PENDING:
            due = timezone.localtime(self.due_at).strftime("%H:%M:%S") if self.due_at else "?"
            return f"Pending after {made}, next at {due}"
        return f"{self.get_state_display()} after {made}"


# On PostgreSQL the row found is locked against deletion (FOR KEY SHARE) until the upload's
# transaction ends: retention deleting an unused old image cannot take it from under an upload
# of the same bytes that found it and is about to give it a job. (SQLite's one writer at a time
# does the same: the lookup runs inside the upload's write transaction.)
STORED_IMAGE_SQL = (
    f"SELECT {rows.columns(StoredImage)} FROM {connection.ops.quote_name(StoredImage._meta.db_table)} WHERE sha256 = %s"
    + (" FOR KEY SHARE" if connection.vendor == "postgresql" else "")
)


def jobs_with_agent_and_image(ids: list[int], owner_id: int | None = None) -> list[Job]:
    """The jobs (only the owner's, if given), oldest first, each with its agent and image: what
    running one or drawing its card needs, read in one statement written once. It runs for every
    job a thread starts and every card a live update redraws; the select_related query it
    replaces was compiled anew each time."""
    sql = JOBS_WITH_AGENT_AND_IMAGE_SQL.format(
        ids=", ".join(["%s"] * len(ids)), owner="" if owner_id is None else " AND j.owner_id = %s"
    )
    found = []
    for job, agent, image in rows.fetch(
        sql, [*ids, *([] if owner_id is None else [owner_id])], Job, Agent, StoredImage
    ):
        job.agent, job.image = agent, image
        found.append(job)
    return found


def _jobs_with_agent_and_image_sql() -> str:
    quote = connection.ops.quote_name
    job, agent, image = (quote(m._meta.db_table) for m in (Job, Agent, StoredImage))
    return (
        f"SELECT {rows.columns(Job, 'j')}, {rows.columns(Agent, 'a')}, {rows.columns(StoredImage, 'i')}"
        f" FROM {job} j LEFT JOIN {agent} a ON a.id = j.agent_id LEFT JOIN {image} i ON i.id = j.image_id"
        " WHERE j.id IN ({ids}){owner} ORDER BY j.created_at, j.id"
    )


JOBS_WITH_AGENT_AND_IMAGE_SQL = _jobs_with_agent_and_image_sql()


def store_image(data: bytes, content_type: str, width: int, height: int) -> tuple[StoredImage, bool]:
    """Keep uploaded bytes once per content hash; True when they were new."""
    digest = hashlib.sha256(data).hexdigest()
    # A statement written once: the ORM query compiled per upload cost four times as much.
    existing = rows.fetch_one(StoredImage, STORED_IMAGE_SQL, [digest])
    if existing:
        return existing, False
    image = StoredImage(sha256=digest, content_type=content_type, width=width, height=height, size=len(data))
    image.file.save("upload", ContentFile(data), save=False)
    # ON CONFLICT DO NOTHING rather than a unique violation: no savepoint around it is needed.
    if rows.insert(image, on_conflict="sha256"):
        return image, True
    # The same bytes arrived twice at once; keep the first row, drop our copy.
    image.file.delete(save=False)
    first = rows.fetch_one(StoredImage, STORED_IMAGE_SQL, [digest])
    assert first is not None, "the row our insert met is committed"
    return first, False


class TokenBucket(models.Model):
    """One row per rate-limited caller, refilled by elapsed time (no cache server needed)."""

    key = models.CharField(max_length=100, unique=True)
    tokens = models.FloatField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.key


class WorkerHeartbeat(models.Model):
    """A django-q2 worker process that is alive, as of its last beat (imagetotext.leases)."""

    name = models.CharField(max_length=200, unique=True, help_text="host:pid")
    beat_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class PagePreferences(models.Model):
    """What the page's form offers first for a user: the model, preset and tag they last sent with."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="page_preferences")
    model = models.CharField(max_length=200, blank=True)
    preset = models.CharField(max_length=50, blank=True, help_text="A Preset's key.")
    tag = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "page preferences"

    def __str__(self) -> str:
        return f"Page preferences of {self.user}"
