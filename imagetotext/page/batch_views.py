"""The batch pages: the user's batches, one batch's progress and grid, edits, retry, cancel, downloads.

Only the owner sees a batch; anyone else gets 404, as if it did not exist. Progress and the
visible items change live over the page's WebSocket (imagetotext.page.consumers).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from imagetotext import batches
from imagetotext.errors import Refusal
from imagetotext.models import Batch, Job, State
from imagetotext.page import batch_cards, exports
from imagetotext.page.views import PageRequest, search_terms, searched

BATCHES_PAGE_SIZE = 20


def owned_batch(request: HttpRequest, batch_id: int) -> Batch:
    return get_object_or_404(Batch, pk=batch_id, owner=request.user)


def batch_job(request: HttpRequest, batch_id: int, job_id: int) -> Job:
    return get_object_or_404(
        Job.objects.select_related("image", "batch"), pk=job_id, batch_id=batch_id, owner=request.user
    )


@login_required
def batch_list(request: PageRequest) -> HttpResponse:
    """The user's batches, newest first, each with how far it got."""
    found = (
        Batch.objects.filter(owner=request.user)
        .order_by("-created_at", "-pk")
        .annotate(
            completed=Count("jobs", filter=Q(jobs__state=State.COMPLETED)),
            failed=Count("jobs", filter=Q(jobs__state=State.FAILED)),
        )
    )
    page = Paginator(found, BATCHES_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "imagetotext/batches.html", {"page": page})


@login_required
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = owned_batch(request, batch_id)
    grid = batch_cards.grid_page(batch, request.GET.get("page"))
    context = {
        "batch": batch,
        "progress": batch_cards.progress(batch),
        "grid": grid,
        "items": [batch_cards.item(job) for job in grid],
    }
    return render(request, "imagetotext/batch.html", context)


@login_required
def caption_editor(request: HttpRequest, batch_id: int, job_id: int) -> HttpResponse:
    """The item with its caption in a text box (htmx swaps it in), or as it is (Cancel)."""
    job = batch_job(request, batch_id, job_id)
    return HttpResponse(batch_cards.render_item(job, oob=False, editing=request.GET.get("cancel") is None))


@login_required
@require_POST
def save_caption(request: PageRequest, batch_id: int, job_id: int) -> HttpResponse:
    """Keep the user's caption beside the model's; the export uses it."""
    job = batch_job(request, batch_id, job_id)
    if job.state != State.COMPLETED:
        return HttpResponse("Only a finished caption can be edited.", status=409)
    try:
        batches.edit_caption(job, request.POST.get("caption", "").replace("\r\n", "\n"))
    except Refusal as refused:  # the editor again, with the reason: the item stays in place
        return HttpResponse(batch_cards.render_item(job, oob=False, error=refused.message), status=400)
    if not request.htmx:
        return redirect("image-to-text-batch", batch_id=batch_id)
    return HttpResponse(batch_cards.render_item(job, oob=False))


@login_required
@require_POST
def retry_failed(request: PageRequest, batch_id: int) -> HttpResponse:
    batch = owned_batch(request, batch_id)
    batches.retry_failed(batch)
    return after_action(request, batch)


@login_required
@require_POST
def cancel_rest(request: PageRequest, batch_id: int) -> HttpResponse:
    batch = owned_batch(request, batch_id)
    batches.cancel_batch(batch)
    return after_action(request, batch)


def after_action(request: PageRequest, batch: Batch) -> HttpResponse:
    """The progress at once (its items follow over the socket), or the page again without htmx."""
    if not request.htmx:
        return redirect("image-to-text-batch", batch_id=batch.pk)
    return HttpResponse(batch_cards.render_progress(batch))


@login_required
def batch_export(request: HttpRequest, batch_id: int) -> HttpResponse | StreamingHttpResponse:
    """The batch as a dataset: ?format=zip (images with .txt sidecars), csv or jsonl."""
    batch = owned_batch(request, batch_id)
    return exports.export_response(batch_cards.batch_jobs(batch), request.GET.get("format", "zip"), f"batch-{batch.pk}")


@login_required
def history_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The results of a history search, newest first, exported like a batch."""
    found = searched(Job.objects.owned_by(request.user), *search_terms(request))
    return exports.export_response(found.order_by("-created_at", "-pk"), request.GET.get("format", "zip"), "history")
