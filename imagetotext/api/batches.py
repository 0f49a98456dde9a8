"""Batches through the API: QueueImageToTextBatch, GetBatchStatus, CancelBatch, RetryBatch,
UpdateBatchCaption and GetBatchExport, in AI Server's wire conventions (imagetotext.batches does the work)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from imagetotext import batches
from imagetotext.api.auth import ApiRequest, api_view
from imagetotext.api.image_to_text import reply_to
from imagetotext.api.wire import fields_of, methods, refusal_response, reply, text_field
from imagetotext.dataset import export_csv, export_jsonl, export_zip, sanitised_path
from imagetotext.errors import Refusal
from imagetotext.models import Batch, Job

DEFAULT_TAKE, MAX_TAKE = 100, 1000
EXPORTS = {
    "zip": ("application/zip", export_zip),
    "csv": ("text/csv; charset=utf-8", export_csv),
    "jsonl": ("application/x-ndjson; charset=utf-8", export_jsonl),
}


@csrf_exempt
@methods("POST")
@api_view("QueueImageToTextBatch")
def queue_image_to_text_batch(request: ApiRequest) -> JsonResponse:
    """Queue every image of the request (several image parts, or one zip part) as one batch."""
    try:
        fields = fields_of(request)
        options = batch_options(request, fields)
        items, skipped = batch_items(request, options)
        batch = batches.create_batch(request.owner, options, items, skipped, request.api_key)
    except Refusal as refusal:
        return refusal_response(refusal)
    return reply(
        {
            "batchId": batch.pk,
            "refId": batch.ref_id,
            "total": batch.total,
            "skipped": batch.skipped,
            "statusUrl": batch_status_url(request, batch),
        }
    )


@methods("GET")
@api_view("GetBatchStatus")
def get_batch_status(request: ApiRequest) -> JsonResponse:
    """Counts, progress and a page of items (Skip, Take) of one of the caller's batches."""
    try:
        fields = fields_of(request)
        batch = find_batch(request, fields)
        skip = number(fields, "Skip", 0, 0, None)
        take = number(fields, "Take", DEFAULT_TAKE, 1, MAX_TAKE)
    except Refusal as refusal:
        return refusal_response(refusal)
    return reply({**batches.status_document(batch, skip, take), "take": take})


@csrf_exempt
@methods("POST")
@api_view("CancelBatch")
def cancel_batch(request: ApiRequest) -> JsonResponse:
    try:
        batch = find_batch(request, fields_of(request))
    except Refusal as refusal:
        return refusal_response(refusal)
    return reply({"batchId": batch.pk, "cancelled": batches.cancel_batch(batch)})


@csrf_exempt
@methods("POST")
@api_view("RetryBatch")
def retry_batch(request: ApiRequest) -> JsonResponse:
    """Run the batch's failed items again."""
    try:
        batch = find_batch(request, fields_of(request))
        retried = batches.retry_failed(batch)
    except Refusal as refusal:
        return refusal_response(refusal)
    return reply({"batchId": batch.pk, "retried": retried})


@csrf_exempt
@methods("POST")
@api_view("UpdateBatchCaption")
def update_batch_caption(request: ApiRequest) -> JsonResponse:
    """Keep the caller's caption for one item; the model's text stays as originalText."""
    try:
        fields = fields_of(request)
        job = find_item(request, fields)
        caption = fields.get("caption")
        if not isinstance(caption, str):
            raise Refusal("Give the Caption as a string", field="Caption")
        with transaction.atomic():
            batches.edit_caption(job, caption)
    except Refusal as refusal:
        return refusal_response(refusal)
    return reply({"jobId": job.pk, "batchId": job.batch_id, "text": caption, "originalText": job.output})


@methods("GET")
@api_view("GetBatchExport")
def get_batch_export(request: ApiRequest) -> HttpResponseBase:
    """The batch as a dataset: a ZIP of images with .txt sidecars and captions.csv/.jsonl, or one of those."""
    try:
        fields = fields_of(request)
        batch = find_batch(request, fields)
        kind = (text_field(fields, "Format", 10) or "zip").lower()
        if kind not in EXPORTS:
            raise Refusal(f"Format must be zip, csv or jsonl, not {kind!r}", field="Format")
    except Refusal as refusal:
        return refusal_response(refusal)
    content_type, export = EXPORTS[kind]
    rows = batches.export_rows(batch.jobs.order_by("pk"))
    response = StreamingHttpResponse(export(rows), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{export_name(batch)}.{kind}"'
    return response


# --- reading the request ------------------------------------------------------------------------


def batch_options(request: ApiRequest, fields: dict[str, Any]) -> batches.BatchOptions:
    return batches.BatchOptions(
        model=text_field(fields, "Model", 200),
        prompt=text_field(fields, "Prompt"),
        preset=text_field(fields, "Preset", 50),
        tag=text_field(fields, "Tag", 100) or request.headers.get("Tag", ""),
        prefix=raw_text(fields, "Prefix", 500),
        suffix=raw_text(fields, "Suffix", 500),
        duplicates=(text_field(fields, "Duplicates", 10) or batches.Duplicates.AGAIN).lower(),
        reply_to=reply_to(request, fields),
        reply_state=text_field(fields, "State", 2000),
        ref_id=text_field(fields, "RefId", 100),
    )


def raw_text(fields: dict[str, Any], name: str, max_length: int) -> str:
    """A field kept as sent, white space included: trigger words carry their separator ("sks, ")."""
    text_field(fields, name, max_length)  # its checks
    value = fields.get(name.lower())
    return value if isinstance(value, str) else ""


def batch_items(request: HttpRequest, options: batches.BatchOptions) -> tuple[list[batches.BatchItem], list[dict]]:
    """The image parts as items, or the zip part's images; the ZIP's members left out, with why."""
    parts = [(name.lower(), upload) for name, uploads in request.FILES.lists() for upload in uploads]
    zips = [upload for name, upload in parts if name == "zip"]
    images = [upload for name, upload in parts if name == "image"]
    if zips and images or len(zips) > 1:
        raise Refusal("Send several 'image' parts or one 'zip' part, not both", field="Zip")
    if zips:
        options.name = options.name or zips[0].name or ""
        return batches.items_from_zip(zips[0])  # type: ignore[arg-type]
    if not images:
        raise Refusal("Upload the images as multipart file parts named 'image', or one named 'zip'", field="Image")
    return [item(upload) for upload in images], []


def item(upload: UploadedFile) -> batches.BatchItem:
    return batches.BatchItem(upload.name or "image", lambda: upload, upload.size)  # type: ignore[arg-type,return-value]


def find_batch(request: ApiRequest, fields: dict[str, Any]) -> Batch:
    """The caller's batch by BatchId or RefId; other owners' batches do not exist for them."""
    owned = Batch.objects.filter(owner=request.owner)
    batch_id, ref_id = id_field(fields, "BatchId"), text_field(fields, "RefId", 100)
    if batch_id is not None:
        batch = owned.filter(pk=batch_id).first()
    elif ref_id:
        batch = owned.filter(ref_id=ref_id).first()
    else:
        raise Refusal("Give a BatchId or a RefId", field="BatchId")
    if batch is None:
        raise Refusal("Batch not found", 404, "NotFound", "RefId" if batch_id is None else "BatchId")
    return batch


def find_item(request: ApiRequest, fields: dict[str, Any]) -> Job:
    job_id = id_field(fields, "JobId")
    if job_id is None:
        raise Refusal("Give the item's JobId", field="JobId")
    job = Job.objects.select_related("batch").filter(owner=request.owner, pk=job_id, batch__isnull=False).first()
    if job is None:
        raise Refusal("Batch item not found", 404, "NotFound", "JobId")
    return job


def id_field(fields: dict[str, Any], name: str) -> int | None:
    """A row id as a JSON number or as text (a form or query field); None when not given."""
    value = fields.get(name.lower())
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 2**63:  # isdigit() passes '²'
        raise Refusal(f"{name} must be a number", field=name)
    return int(text)


def number(fields: dict[str, Any], name: str, default: int, low: int, high: int | None) -> int:
    text = text_field(fields, name, 20)
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < low or (high is not None and int(text) > high):
        within = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise Refusal(f"{name} must be a whole number {within}", field=name)
    return int(text)


def export_name(batch: Batch) -> str:
    """The download's name: the batch's (a ZIP's name without .zip), safe in a header, else batch-<id>."""
    stem = sanitised_path(batch.name)[0].rsplit("/", 1)[-1].removesuffix(".zip")
    safe = "".join(char for char in stem if char.isascii() and (char.isalnum() or char in "-_. "))
    return safe.strip(" .") or f"batch-{batch.pk}"


def batch_status_url(request: HttpRequest, batch: Batch) -> str:
    return request.build_absolute_uri(reverse("get-batch-status") + "?" + urlencode({"BatchId": batch.pk}))
