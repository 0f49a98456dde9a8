"""The Image to Text pages: compose and send, live job cards, history.

Cards reach an open page one way: over the WebSocket (imagetotext.page.consumers), as each
job is created and changes. The htmx answers here carry only errors and notices.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Length, Substr
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST
from django_htmx.middleware import HtmxDetails

from agents.models import Capability
from imagetotext import jobs
from imagetotext.errors import ImageRejected, Refusal
from imagetotext.images import UploadedImage, read_uploaded_file
from imagetotext.models import InvalidTransition, Job, StoredImage
from imagetotext.page import sending
from imagetotext.page.cards import PREVIEW_CHARS, card, latest_cards, render_card
from imagetotext.page.choices import is_job_id, job_to_run_again, remember, remembered
from imagetotext.page.forms import FALLBACK_PRESET, SubmitForm, load_presets, model_groups, usable_models
from imagetotext.page.limits import upload_rules

HISTORY_PAGE_SIZE = 20
ERRORS = "imagetotext/partials/upload_errors.html"
PATH_MAX_CHARS = Job._meta.get_field("path").max_length or 500


class PageRequest(HttpRequest):
    """A request as the page's views get it: signed in (login_required), with django-htmx's details."""

    user: User
    htmx: HtmxDetails


def owned_job(request: HttpRequest, job_id: int) -> Job:
    """The signed-in user's job; others' jobs are 404, as if they did not exist."""
    return get_object_or_404(Job.objects.select_related("image", "agent"), pk=job_id, owner=request.user)


# --- compose and send -----------------------------------------------------


@login_required
def page(request: HttpRequest) -> HttpResponse:
    """The Image to Text page: the compose form and the user's latest cards."""
    return render_page(request)


def render_page(request: HttpRequest, errors: list[str] | None = None, status: int = 200) -> HttpResponse:
    presets = load_presets()
    models = usable_models(presets)
    choices = remembered(request.user, models, presets)
    context = {
        "model_groups": model_groups(models),
        # Only the built-in OCR (or nothing): say how to get captions and descriptions.
        "needs_agent": all(choice.capability == Capability.OCR for choice in models.values()),
        "presets": presets,
        "choices": choices,
        "default_preset": choices.preset,
        "no_presets": presets == [FALLBACK_PRESET],
        "rules": upload_rules(),
        "again": job_to_run_again(request),
        "duplicates": sending.DUPLICATE_CHOICES,
        "cards": latest_cards(request.user),
        "errors": errors or [],
    }
    return render(request, "imagetotext/page.html", context, status=status)


def readable_body_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Read the form before the CSRF check, so a body Django cannot parse gets the page's own refusal.

    CSRF's middleware reads request.POST first and answers a broken body with Django's bare 400;
    so the view is exempt from the middleware and checked (csrf_protect) once the body is read.
    """
    protected = csrf_protect(view)

    @wraps(view)
    def read_first(request: PageRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if unreadable := body_refusal(request):
            return refuse(request, [unreadable[0]], status=unreadable[1])
        return protected(request, *args, **kwargs)

    return csrf_exempt(read_first)


def body_refusal(request: HttpRequest) -> tuple[str, int] | None:
    """Why the request's form cannot be read (message, status), or None once it is read."""
    try:
        request.FILES.getlist("images")  # parses request.POST too
    except RequestDataTooBig:
        return "The request is too large for the server to read; send fewer or smaller images.", 413
    except (TooManyFieldsSent, TooManyFilesSent):
        return "The request has too many fields or files; send fewer images at once.", 400
    except MultiPartParserError:
        return "The request could not be read as a form of images.", 400
    return None


@login_required
@require_POST
@readable_body_errors
def submit(request: PageRequest) -> HttpResponse:
    """One image (or stored images run again): one job each, nothing written if any is refused.
    Several images, a folder or one ZIP: a batch, where a bad file is skipped and reported.

    The new cards reach the page over its WebSocket, like every later change of theirs.
    """
    presets = load_presets()
    form = SubmitForm(request.POST, models=usable_models(presets), presets=presets)
    uploads = sending.named_uploads(request)
    if not form.is_valid():
        # str(): an ErrorList yields its messages as strings, which its stubs do not say.
        return refuse(request, [str(message) for messages in form.errors.values() for message in messages])
    # Stored images run again go with new ones as single jobs, as before batches.
    if sending.is_batch(uploads) and not request.POST.getlist("again"):
        return send_batch(request, form, uploads)
    images, errors = read_images(request, uploads)
    spec = None
    if not errors:
        try:
            spec = jobs.validate(job_request(request, form))
        except Refusal as refused:
            errors.append(refused.message)
    if spec is None or errors:
        return refuse(request, errors)
    try:
        for image, path in images:
            create(spec, image, path)
    except Refusal as refused:
        errors.append(refused.message)  # e.g. the disk filled up meanwhile; what was sent stays sent
    else:
        remember(request.user, form)
    if not request.htmx:
        return refuse(request, errors) if errors else redirect("image-to-text")
    return HttpResponse(render_to_string(ERRORS, {"errors": errors, "oob": True}) + sending.render_sent(None))


def send_batch(request: PageRequest, form: SubmitForm, uploads: list[sending.NamedUpload]) -> HttpResponse:
    """The uploads as one batch; its page follows it. Only a refusal of the whole batch sends nothing."""
    try:
        batch = sending.create_batch(request.user, form, uploads)
    except Refusal as refused:
        return refuse(request, [refused.message], status=refused.status if refused.status < 500 else 400)
    remember(request.user, form)
    if not request.htmx:
        return redirect("image-to-text-batch", batch_id=batch.pk)
    return HttpResponse(render_to_string(ERRORS, {"errors": [], "oob": True}) + sending.render_sent(batch))


ImageAndPath = tuple[UploadedImage | StoredImage, str]


def read_images(request: HttpRequest, uploads: list[sending.NamedUpload]) -> tuple[list[ImageAndPath], list[str]]:
    """Every upload checked, plus the stored images of the user's jobs to run again; with the refusals."""
    images: list[ImageAndPath] = []
    errors = []
    for upload in uploads:
        try:
            images.append((read_uploaded_file(upload.file), upload.path))
        except ImageRejected as rejected:
            errors.append(f"{upload.path}: {rejected.message}")
    again = [value for value in request.POST.getlist("again") if is_job_id(value)]
    for job in Job.objects.owned_by(request.user).filter(pk__in=again, image__isnull=False).select_related("image"):
        if job.image is not None:  # always, by the filter
            images.append((job.image, job.path))
    if not images and not errors:
        errors.append("Add at least one image: choose files, drop them on the page, or paste one.")
    return images, errors


def job_request(request: HttpRequest, form: SubmitForm) -> jobs.JobRequest:
    return jobs.JobRequest(owner=request.user, tag=form.cleaned_data["tag"], **form.job_fields())


def create(spec: jobs.JobSpec, image: UploadedImage | StoredImage, path: str) -> Job:
    """The job for one image, keeping the file's name (sanitised) as its path."""
    named = jobs.JobSpec({**spec.fields, "path": path[:PATH_MAX_CHARS]}, spec.ref_id)
    if isinstance(image, StoredImage):
        return jobs.create(named, image)
    return jobs.create_with_upload(named, image)


def refuse(request: PageRequest, errors: list[str], status: int = 400) -> HttpResponse:
    if request.htmx:
        # The notice of an earlier batch goes: it would read as if this send went.
        return HttpResponse(
            render_to_string(ERRORS, {"errors": errors, "oob": True}) + sending.render_sent(None), status=status
        )
    return render_page(request, errors, status=status)


# --- one job ---------------------------------------------------------------


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """One job in full: its live card, its images at full size, and what it was asked and took."""
    job = owned_job(request, job_id)
    context = {"job": job, "card": card(job, full=True), "images": list(enumerate(job.stored_images(), start=1))}
    return render(request, "imagetotext/job.html", context)


@login_required
def job_text(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job's whole text, for copying from a card that shows only its start."""
    response = HttpResponse(owned_job(request, job_id).output, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "private, no-cache"
    return response


@login_required
@require_POST
def retry(request: HttpRequest, job_id: int) -> HttpResponse:
    """Run a finished job again as it was; its card comes back queued over the socket."""
    job = owned_job(request, job_id)
    if job.finished:
        try:
            jobs.retry(job)
        except (Refusal, InvalidTransition) as refused:
            return HttpResponse(render_card(job, notice=f"Could not retry: {refused}"))
    return HttpResponse(status=204)


@login_required
@require_POST
def cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = owned_job(request, job_id)
    jobs.cancel(job)
    # Cancelled is final, so answering with the card races with nothing the socket sends.
    return HttpResponse(render_card(job))


@login_required
@require_POST
def delete(request: PageRequest, job_id: int) -> HttpResponse:
    """Delete a finished job, and its image unless another job still uses it."""
    job = owned_job(request, job_id)
    if not job.finished:
        return HttpResponse("Cancel the job before deleting it.", status=409)
    images = job.stored_images()
    job.delete()
    # One statement, so an upload of the same bytes meanwhile keeps the image. On PostgreSQL an
    # upload that found the image holds it until it commits its job, and the job's key is checked
    # at commit: then the image stays, and the job is still deleted.
    unused = StoredImage.objects.filter(pk__in=[image.pk for image in images])
    try:
        with transaction.atomic():
            unused.filter(jobs__isnull=True, later_in_jobs__isnull=True).delete()
    except IntegrityError:
        pass
    kept = set(StoredImage.objects.filter(pk__in=[image.pk for image in images]).values_list("pk", flat=True))
    for image in images:
        if image.pk not in kept:
            image.file.delete(save=False)
    if request.htmx:
        return HttpResponse("")
    return redirect(same_site(request, request.POST.get("next", "")) or "image-to-text-history")


def same_site(request: HttpRequest, url: str) -> str:
    """url if it stays on this site, else "": a form's next= must not send the user elsewhere."""
    allowed = url_has_allowed_host_and_scheme(url, {request.get_host()}, require_https=request.is_secure())
    return url if allowed else ""


# --- history ---------------------------------------------------------------


@login_required
def history(request: HttpRequest) -> HttpResponse:
    """The user's past requests, newest first, searchable by file name, text, model and tag."""
    mine = Job.objects.owned_by(request.user)
    query, model, tag = search_terms(request)
    # A row shows the start of the text: the rest stays in the database.
    found = (
        searched(mine.select_related("image", "agent"), query, model, tag)
        .defer("output")
        .annotate(output_head=Substr("output", 1, PREVIEW_CHARS), output_length=Length("output"))
    )
    context: dict[str, Any] = {
        "page": Paginator(found, HISTORY_PAGE_SIZE).get_page(request.GET.get("page")),
        "q": query,
        "model": model,
        "tag": tag,
        "models": mine.order_by("model").values_list("model", flat=True).distinct(),
        "tags": mine.exclude(tag="").order_by("tag").values_list("tag", flat=True).distinct(),
        "filters": request.GET.copy(),
        "preview_chars": PREVIEW_CHARS,
    }
    context["filters"].pop("page", None)
    return render(request, "imagetotext/history.html", context)


def search_terms(request: HttpRequest) -> tuple[str, str, str]:
    """The history search: words, model, tag (each may be empty)."""
    query, model, tag = (request.GET.get(name, "").strip() for name in ("q", "model", "tag"))
    return query, model, tag


def searched(found: QuerySet[Job], query: str, model: str, tag: str) -> QuerySet[Job]:
    """The jobs a history search finds: words in the file's path, the prompt, the text or the error."""
    if query:
        found = found.filter(
            Q(path__icontains=query)
            | Q(prompt__icontains=query)
            | Q(output__icontains=query)
            | Q(edited_text__icontains=query)
            | Q(error__icontains=query)
        )
    if model:
        found = found.filter(model=model)
    if tag:
        found = found.filter(tag=tag)
    return found
