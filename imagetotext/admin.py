"""Jobs (all, and the failed ones on their own), batches, presets, API keys and stored images.

Jobs and batches are made by the API and the page, so the admin only reads them, edits their
tag, and cancels or retries them; presets are edited here; keys are issued here and shown once.
"""

from __future__ import annotations

import base64
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from imagetotext import batches, jobs
from imagetotext.callbacks import destination
from imagetotext.errors import Refusal
from imagetotext.models import (
    ApiKey,
    Batch,
    CallbackAttempt,
    FailedJob,
    InvalidTransition,
    Job,
    Preset,
    State,
    StoredImage,
)

STATE_COLOURS: dict[str, str] = {
    State.QUEUED: "#6b7280",
    State.STARTED: "#2563eb",
    State.COMPLETED: "#16a34a",
    State.FAILED: "#dc2626",
    State.CANCELLED: "#d97706",
}
# Media is not served over HTTP, so the detail page inlines the (already resized) image.
PREVIEW_MAX_BYTES = 2 * 1024 * 1024


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    fields = ("number", "attempted_at", "outcome", "status_code", "error", "idempotency_key")
    readonly_fields = fields  # a tuple, so that mypy also takes it as readonly_fields (strings only)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "state_badge", "owner", "model", "agent", "duration_display", "created_at", "ref_id", "tag"]
    list_filter = ["state", "agent", "model", "api", "created_at"]
    list_select_related = ["owner", "agent"]
    search_fields = ["ref_id", "tag", "path", "model", "prompt", "output", "error"]
    ordering = ["-created_at", "-id"]
    date_hierarchy = "created_at"
    fieldsets = [
        (None, {"fields": ["state_badge", "status", "owner", "api_key", "api", "ref_id", "tag", "batch", "path"]}),
        ("Request", {"fields": ["image_preview", "model", "florence_task", "prompt", "options"]}),
        (
            "Result",
            {
                "fields": [
                    "output",
                    "edited_text",
                    "earlier_text",
                    "error_code",
                    "error",
                    "prompt_tokens",
                    "completion_tokens",
                ]
            },
        ),
        (
            "Timings",
            {
                "fields": [
                    "created_at",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "duration_display",
                    "agent",
                    "attempts",
                    "tried_agents",
                ]
            },
        ),
        (
            "Callback",
            {"fields": ["callback_destination", "reply_state", "callback_deliveries"], "classes": ["collapse"]},
        ),
        ("Backend reply", {"fields": ["result"], "classes": ["collapse"]}),
    ]
    inlines = [CallbackAttemptInline]
    actions = ["cancel_jobs", "retry_jobs"]

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        # Everything but the tag: a job's record is the API's, not the admin's.
        shown = flatten_fieldsets(self.fieldsets)
        return [name for name in shown if name != "tag"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="state", ordering="state")
    def state_badge(self, job: Job) -> str:
        return format_html(
            '<span style="background:{};color:#fff;padding:1px 8px;border-radius:9px;white-space:nowrap">{}</span>',
            STATE_COLOURS.get(job.state, "#6b7280"),
            job.state,
        )

    @admin.display(description="ReplyTo")
    def callback_destination(self, job: Job) -> str:
        return destination(job) if job.reply_to else "—"

    @admin.display(description="deliveries")
    def callback_deliveries(self, job: Job) -> str:
        """Each delivery the job's ends owed (its key, and how far it got); the attempts are listed below."""
        owed = job.callback_deliveries.order_by("pk")
        return "\n".join(f"{delivery.key}: {delivery.summary}" for delivery in owed) or "—"  # a line each

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> str:
        return "—" if job.duration is None else f"{job.duration:.1f} s"

    @admin.display(description="image")
    def image_preview(self, job: Job) -> str:
        image = job.image
        if image is None:
            return "—"
        facts = f"{image.width}×{image.height} {image.content_type}, {filesizeformat(image.size)}"
        data = read_small(image)
        if data is None:
            return facts
        source = f"data:{image.content_type};base64,{base64.b64encode(data).decode()}"
        return format_html('<img src="{}" alt="" style="max-width:320px;max-height:320px"><br>{}', source, facts)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        chosen = list(queryset)
        cancelled = sum(1 for job in chosen if jobs.cancel(job))
        message = f"Cancelled {cancelled} of {len(chosen)} job(s)."
        if cancelled < len(chosen):
            message += " The others had already finished."
        self.message_user(request, message, messages.SUCCESS if cancelled else messages.WARNING)

    @admin.action(description="Retry selected jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        queued, refused = 0, []
        for job in queryset:
            reason = retry_one(job)
            if reason:
                refused.append(f"job {job.pk}: {reason}")
            else:
                queued += 1
        if queued:
            self.message_user(request, f"Queued {queued} job(s) again.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not retried — " + "; ".join(refused), messages.WARNING)


def retry_one(job: Job) -> str:
    """Queue a finished job again; the reason it cannot be, or '' when it was."""
    if not job.finished:
        return f"it is {job.state.lower()}, not finished"
    try:
        jobs.retry(job)
    except Refusal as refusal:
        return refusal.message
    except InvalidTransition as error:
        return str(error)
    return ""


def read_small(image: StoredImage) -> bytes | None:
    """The stored file's bytes if it is there and small enough to inline."""
    try:
        if image.file.size > PREVIEW_MAX_BYTES:
            return None
        with image.file.open("rb") as file:
            return file.read()
    except (OSError, ValueError):
        return None


@admin.register(FailedJob)
class FailedJobAdmin(JobAdmin):
    # Every row here is Failed, so the error takes the state's place (and the list keeps to 1280 px).
    list_display = [name for name in JobAdmin.list_display if name != "state_badge"] + ["error_summary"]
    list_filter = ["agent", "model", "api", "error_code", "created_at"]
    actions = ["retry_jobs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).filter(state=State.FAILED)

    @admin.display(description="error")
    def error_summary(self, job: Job) -> str:
        return Truncator(job.error).chars(100)


class ApiKeyForm(forms.ModelForm):
    restrict_to = forms.CharField(
        required=False,
        label="Restrict to APIs",
        help_text="Comma-separated API names, e.g. ImageToText, QueueImageToText. Empty: all APIs.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "expires_at", "restrict_to"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["restrict_to"] = ", ".join(self.instance.restrict_to or [])

    def clean_restrict_to(self) -> list[str]:
        names = [name.strip() for name in self.cleaned_data["restrict_to"].split(",") if name.strip()]
        if bad := ApiKey.invalid_api_names(names):
            raise forms.ValidationError(f"Not an API name: {', '.join(bad)}")
        return names


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "owner",
        "prefix",
        "usable",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "restricted_to",
    ]
    list_filter = ["owner", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "prefix", "owner__username"]
    ordering = ["-created_at"]
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "owner", "expires_at", "restrict_to")
        return ("name", "owner", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at", "restrict_to")

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """A new key is for the signed-in user unless another owner is picked (or given in the URL)."""
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # The key_hash is never shown, not even read-only.
        return [] if obj is None else ["owner", "prefix", "created_at", "revoked_at", "last_used_at"]

    @admin.display(boolean=True)
    def usable(self, key: ApiKey) -> bool:
        return key.usable

    @admin.display(description="restricted to")
    def restricted_to(self, key: ApiKey) -> str:
        return ", ".join(key.restrict_to) or "all APIs"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, key = ApiKey.issue(obj.owner, obj.name, expires_at=obj.expires_at, restrict_to=obj.restrict_to)
        vars(obj).update(vars(row))  # the admin goes on with obj: make it the stored row
        self.message_user(request, f"Copy it now: {key}; it will not be shown again.", messages.SUCCESS)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} key(s).")


@admin.register(StoredImage)
class StoredImageAdmin(admin.ModelAdmin):
    list_display = ["short_hash", "content_type", "dimensions", "upload_size", "created_at"]
    list_filter = ["content_type", "created_at"]
    search_fields = ["sha256"]
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StoredImage | None = None) -> bool:
        return False

    @admin.display(description="SHA-256", ordering="sha256")
    def short_hash(self, image: StoredImage) -> str:
        return image.sha256[:12]

    @admin.display(description="dimensions")
    def dimensions(self, image: StoredImage) -> str:
        return f"{image.width}×{image.height}"

    @admin.display(description="size", ordering="size")
    def upload_size(self, image: StoredImage) -> str:
        return filesizeformat(image.size)


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Batches as the API and the page made them; cancel or retry their items from the list."""

    list_display = ["id", "name", "owner", "model", "total", "progress_display", "created_at", "finished_at"]
    list_filter = ["model", "duplicates", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "ref_id", "tag"]
    ordering = ["-created_at", "-id"]
    actions = ["cancel_batches", "retry_failed_items"]
    readonly_fields = [field.name for field in Batch._meta.fields] + ["progress_display"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="progress")
    def progress_display(self, batch: Batch) -> str:
        numbers = batches.counts(batch)
        return f"{numbers['completed']} done, {numbers['failed']} failed, {numbers['cancelled']} cancelled"

    @admin.action(description="Cancel the unfinished items of selected batches")
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        cancelled = sum(batches.cancel_batch(batch) for batch in queryset)
        self.message_user(request, f"Cancelled {cancelled} item(s).")

    @admin.action(description="Retry the failed items of selected batches")
    def retry_failed_items(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        try:
            retried = sum(batches.retry_failed(batch) for batch in queryset)
        except Refusal as refusal:
            self.message_user(request, refusal.message, messages.ERROR)
            return
        self.message_user(request, f"Retried {retried} item(s).")


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    """The page's and the API's presets: the prompt a vision model gets, the Florence-2 task instead."""

    list_display = ["key", "label", "florence_task", "longest_side", "position"]
    list_editable = ["position"]
    search_fields = ["key", "label", "prompt"]
