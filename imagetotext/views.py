"""The Image to Text pages: compose and send, live job cards, history.

Cards are rendered in one place (render_card) for the page, the htmx responses
and the WebSocket consumer, so a card looks the same however it arrived.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from agents.models import Task
from imagetotext import jobs
from imagetotext.conf import Conf
from imagetotext.forms import FLORENCE_TASK_LABELS, PRESETS, SubmitForm, model_groups, usable_models
from imagetotext.images import ImageRejected, UploadedImage, read_upload, thumbnail as make_thumbnail
from imagetotext.markdown import render_markdown
from imagetotext.models import FINISHED, InvalidTransition, Job, State, StoredImage
from imagetotext.scheduling import queue_position

CARDS_ON_PAGE = 20
HISTORY_PAGE_SIZE = 20
THUMBNAIL_SIZE = 320
# Finished this recently, a job's card is resent when a socket (re)connects.
RESYNC_FINISHED_WITHIN = timedelta(minutes=10)
CARD = "imagetotext/partials/job_card.html"
TEXT = "imagetotext/partials/job_text.html"
ERRORS = "imagetotext/partials/upload_errors.html"


# --- cards -------------------------------------------------------------------

def render_card(job: Job, oob: bool = False, notice: str = "") -> str:
    """A job's card as it is now; `oob` marks it for an out-of-band swap in an htmx response."""
    context: dict[str, Any] = {
        "job": job, "oob": oob, "notice": notice, "rendered_at": f"{time.time():.3f}",
        "task_label": FLORENCE_TASK_LABELS.get(job.florence_task, job.florence_task),
    }
    if job.state == State.QUEUED and job.agent_id is None:
        context["position"] = queue_position(job)
    if job.state == State.COMPLETED:
        context["output_html"] = render_markdown(job.output)
        context["tokens_per_second"] = tokens_per_second(job)
    return render_to_string(CARD, context)


def render_text(job_id: int, text: str) -> str:
    """The streaming text area of a running job's card."""
    return render_to_string(TEXT, {"job_id": job_id, "text": text})


def tokens_per_second(job: Job) -> float | None:
    seconds = job.duration
    if not job.completion_tokens or not seconds:
        return None
    return job.completion_tokens / seconds


def card_for(user: Any, job_id: int) -> str:
    """The user's job's card, or "" when it is not theirs or is gone."""
    job = Job.objects.owned_by(user).select_related("image", "agent").filter(pk=job_id).first()
    return render_card(job) if job else ""


def current_cards(user: Any) -> str:
    """Cards of the user's unfinished and recently finished jobs: what a reconnecting page may have missed."""
    recent = Q(finished_at__gte=timezone.now() - RESYNC_FINISHED_WITHIN)
    wanted = Job.objects.owned_by(user).filter(~Q(state__in=FINISHED) | recent).select_related("image", "agent")
    return "".join(render_card(job) for job in wanted)


def owned_job(request: HttpRequest, job_id: int) -> Job:
    """The signed-in user's job; others' jobs are 404, as if they did not exist."""
    return get_object_or_404(Job.objects.select_related("image", "agent"), pk=job_id, owner=request.user)


# --- compose and send -----------------------------------------------------

@login_required
def page(request: HttpRequest) -> HttpResponse:
    """The Image to Text page: the compose form and the user's latest cards."""
    return render_page(request)


def render_page(request: HttpRequest, errors: list[str] | None = None, status: int = 200) -> HttpResponse:
    models = usable_models()
    recent = Job.objects.owned_by(request.user).select_related("image", "agent")[:CARDS_ON_PAGE]
    context = {
        "model_groups": model_groups(models),
        # Only the built-in OCR (or nothing): say how to get captions and descriptions.
        "needs_agent": all(choice.task == Task.OCR for choice in models.values()),
        "presets": PRESETS,
        "default_preset": PRESETS[1],
        "cards": mark_safe("".join(render_card(job) for job in recent)),  # noqa: S308 - rendered templates
        "errors": errors or [],
    }
    return render(request, "imagetotext/page.html", context, status=status)


@login_required
@require_POST
def submit(request: HttpRequest) -> HttpResponse:
    """One job per image sent (uploads, or stored images run again); nothing is written if any is refused."""
    form = SubmitForm(request.POST, models=usable_models())
    images, errors = read_images(request)
    if not form.is_valid():
        errors = [message for messages in form.errors.values() for message in messages] + errors
    elif not errors:
        try:
            jobs.check(job_request(request, form))
        except jobs.JobRefused as refused:
            errors.append(refused.message)
    if errors:
        return refuse(request, errors)
    created = []
    try:
        for image in images:
            created.append(send(job_request(request, form), image))
    except (jobs.JobRefused, ImageRejected) as refused:
        errors.append(refused.message)  # the agent went away meanwhile; what was sent stays sent
    if not request.htmx:
        return refuse(request, errors) if errors else redirect("image-to-text")
    cards = "".join(render_card(job) for job in reversed(created))
    return HttpResponse(cards + render_to_string(ERRORS, {"errors": errors, "oob": True}))


def read_images(request: HttpRequest) -> tuple[list[UploadedImage | StoredImage], list[str]]:
    """Every upload checked, plus the stored images of the user's jobs to run again; with the refusals."""
    images: list[UploadedImage | StoredImage] = []
    errors = []
    for upload in request.FILES.getlist("images"):
        try:
            if upload.size and upload.size > Conf.MAX_UPLOAD_BYTES:  # refuse before reading it into memory
                raise ImageRejected(f"The image is larger than {Conf.MAX_UPLOAD_BYTES // 2**20} MB", 413, "ImageTooLarge")
            images.append(read_upload(upload.read()))
        except ImageRejected as rejected:
            errors.append(f"{upload.name}: {rejected.message}")
    again = [value for value in request.POST.getlist("again") if value.isdigit()]
    for job in Job.objects.owned_by(request.user).filter(pk__in=again, image__isnull=False).select_related("image"):
        images.append(job.image)
    if not images and not errors:
        errors.append("Add at least one image: choose files, drop them on the page, or paste one.")
    return images, errors


def job_request(request: HttpRequest, form: SubmitForm) -> jobs.JobRequest:
    return jobs.JobRequest(owner=request.user, image=None, tag=form.cleaned_data["tag"], **form.job_fields())


def send(job_request: jobs.JobRequest, image: UploadedImage | StoredImage) -> Job:
    if isinstance(image, StoredImage):
        job_request.image = image
        return jobs.submit(job_request)
    return jobs.submit_upload(job_request, image)


def refuse(request: HttpRequest, errors: list[str]) -> HttpResponse:
    if request.htmx:
        return HttpResponse(render_to_string(ERRORS, {"errors": errors, "oob": True}), status=400)
    return render_page(request, errors, status=400)


# --- one job ---------------------------------------------------------------

@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = owned_job(request, job_id)
    return render(request, "imagetotext/job.html", {"job": job, "card": mark_safe(render_card(job))})  # noqa: S308


@login_required
@require_POST
def retry(request: HttpRequest, job_id: int) -> HttpResponse:
    """Run a finished job again as it was; the card comes back queued."""
    job, notice = owned_job(request, job_id), ""
    if job.finished:
        try:
            jobs.retry(job)
        except (jobs.JobRefused, InvalidTransition) as refused:
            notice = f"Could not retry: {refused}"
    return HttpResponse(render_card(job, oob=True, notice=notice))


@login_required
@require_POST
def cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = owned_job(request, job_id)
    jobs.cancel(job)
    return HttpResponse(render_card(job, oob=True))


@login_required
@require_POST
def delete(request: HttpRequest, job_id: int) -> HttpResponse:
    """Delete a finished job, and its image unless another job still uses it."""
    job = owned_job(request, job_id)
    if not job.finished:
        return HttpResponse("Cancel the job before deleting it.", status=409)
    image = job.image
    with transaction.atomic():
        job.delete()
        # One statement, so an upload of the same bytes meanwhile keeps the image.
        orphaned = image is not None and StoredImage.objects.filter(pk=image.pk, jobs__isnull=True).delete()[0]
    if orphaned:
        image.file.delete(save=False)
    if request.htmx:
        return HttpResponse("")
    return redirect(request.POST.get("next") or "image-to-text-history")


@login_required
def thumbnail(request: HttpRequest, sha256: str) -> HttpResponse:
    """A small WebP of one of the user's images; its URL names its content, so browsers keep it."""
    image = StoredImage.objects.filter(sha256=sha256, jobs__owner=request.user).first()
    if image is None:
        raise Http404("No such image")
    etag = f'"{sha256}-{THUMBNAIL_SIZE}"'
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        with image.file.open("rb") as handle:
            response = HttpResponse(make_thumbnail(handle.read(), THUMBNAIL_SIZE), content_type="image/webp")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


# --- history ---------------------------------------------------------------

@login_required
def history(request: HttpRequest) -> HttpResponse:
    """The user's past requests, newest first, searchable by text, model and tag."""
    mine = Job.objects.owned_by(request.user)
    query, model, tag = (request.GET.get(name, "").strip() for name in ("q", "model", "tag"))
    found = mine.select_related("image", "agent")
    if query:
        found = found.filter(Q(prompt__icontains=query) | Q(output__icontains=query) | Q(error__icontains=query))
    if model:
        found = found.filter(model=model)
    if tag:
        found = found.filter(tag=tag)
    context = {
        "page": Paginator(found, HISTORY_PAGE_SIZE).get_page(request.GET.get("page")),
        "q": query, "model": model, "tag": tag,
        "models": mine.order_by("model").values_list("model", flat=True).distinct(),
        "tags": mine.exclude(tag="").order_by("tag").values_list("tag", flat=True).distinct(),
        "filters": request.GET.copy(),
    }
    context["filters"].pop("page", None)
    return render(request, "imagetotext/history.html", context)
