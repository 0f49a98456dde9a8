"""What the page sends: the uploads with their paths, and when they make a batch rather than a job.

A folder's files keep their relative path (the browser's webkitRelativePath, sent in a `paths`
field beside each file: Django keeps only a file name's last segment).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from django.template.loader import render_to_string

from imagetotext import batches
from imagetotext.dataset import sanitised_path
from imagetotext.errors import Refusal
from imagetotext.models import Batch, Duplicates
from imagetotext.page.forms import SubmitForm

SENT = "imagetotext/partials/sent_notice.html"
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
DUPLICATE_CHOICES = Duplicates.choices
# How many skipped files the notice names; the batch page lists them all.
SKIPPED_NAMED = 5


@dataclass(frozen=True)
class NamedUpload:
    """An uploaded file and the path it is kept under."""

    file: UploadedFile
    path: str

    @property
    def is_zip(self) -> bool:
        return self.path.lower().endswith(".zip") or self.file.content_type in ZIP_TYPES


def named_uploads(request: HttpRequest) -> list[NamedUpload]:
    """The uploaded images, each with its folder path when the page sent one, else its file name."""
    files = request.FILES.getlist("images")
    paths = request.POST.getlist("paths")
    uploads = []
    for index, upload in enumerate(files):
        given = paths[index] if index < len(paths) and paths[index] else upload.name or ""
        path = sanitised_path(given)[0] or sanitised_path(upload.name or "")[0] or f"image-{index + 1}"
        uploads.append(NamedUpload(upload, path))
    return uploads


def is_batch(uploads: list[NamedUpload]) -> bool:
    """Several files, or one ZIP, become a batch; one image stays a single job."""
    return len(uploads) > 1 or (len(uploads) == 1 and uploads[0].is_zip)


def create_batch(owner: Any, form: SubmitForm, uploads: list[NamedUpload]) -> Batch:
    """The batch of these uploads (or of the one ZIP's images); raises Refusal for the whole batch."""
    skipped = None
    if len(uploads) == 1 and uploads[0].is_zip:
        items, skipped = batches.items_from_zip(uploads[0].file)  # type: ignore[arg-type]
        if not items:
            reasons = ", ".join(f"{each['path']}: {each['reason']}" for each in skipped[:SKIPPED_NAMED])
            raise Refusal(f"The ZIP holds no image we can read ({reasons or 'it is empty'}).", field="Zip")
    else:
        items = [batches.BatchItem(upload.path, opener(upload.file)) for upload in uploads]
    return batches.create_batch(owner, batch_options(form, batch_name(uploads)), items, skipped)


def opener(upload: UploadedFile) -> Any:
    def open_upload() -> Any:
        upload.seek(0)
        return upload

    return open_upload


def batch_options(form: SubmitForm, name: str) -> batches.BatchOptions:
    data = form.cleaned_data
    fields = form.job_fields()
    return batches.BatchOptions(
        model=fields["model"],
        prompt=fields["prompt"],
        preset=fields["preset"].key if fields["preset"].pk else "",
        tag=data["tag"],
        prefix=data["caption_prefix"],
        suffix=data["caption_suffix"],
        duplicates=data["duplicates"] or Duplicates.AGAIN,
        reply_to="",
        reply_state="",
        ref_id="",
        name=name,
    )


def batch_name(uploads: list[NamedUpload]) -> str:
    """The ZIP's name, the folder's name when all came from one, else how many images."""
    if len(uploads) == 1:
        return posixpath.basename(uploads[0].path)
    tops = {upload.path.split("/")[0] for upload in uploads if "/" in upload.path}
    if len(tops) == 1 and all("/" in upload.path for upload in uploads):
        return tops.pop()
    return f"{len(uploads)} images"


def skipped_summary(batch: Batch) -> str:
    """'3 of 40 were skipped: a.jpg: not an image, …', or "" when none was."""
    skipped = batch.skipped or []
    if not skipped:
        return ""
    named = ", ".join(f"{item['path']}: {item['reason']}" for item in skipped[:SKIPPED_NAMED])
    more = f", and {len(skipped) - SKIPPED_NAMED} more" if len(skipped) > SKIPPED_NAMED else ""
    was = "was" if len(skipped) == 1 else "were"
    return f"{len(skipped)} of {len(skipped) + batch.total} {was} skipped: {named}{more}."


def render_sent(batch: Batch | None) -> str:
    """The notice under the form: the batch just started with what was skipped, or nothing for single jobs."""
    return render_to_string(SENT, {"oob": True, "batch": batch, "skipped": skipped_summary(batch) if batch else ""})
