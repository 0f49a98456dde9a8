"""The user's images on the page: small thumbnails, and a job's originals at full size.

Media files are never served by URL: each view here checks the image belongs to one of the
signed-in user's jobs, and answers 404 otherwise, as if it did not exist.
"""

from __future__ import annotations

import posixpath

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.http.response import HttpResponseBase

from imagetotext.images import thumbnail as make_thumbnail
from imagetotext.models import Job, StoredImage
from imagetotext.page.views import PageRequest

THUMBNAIL_SIZE = 320
# What browsers show in an <img>; the others (TIFF) are shown as a full-size WebP, and downloaded as sent.
SHOWN_AS_SENT = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"})


@login_required
def thumbnail(request: PageRequest, sha256: str) -> HttpResponse:
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


@login_required
def original(request: PageRequest, job_id: int, number: int) -> HttpResponseBase:
    """The job's image `number` (from 1) as it was sent; ?download=1 saves it under its file name."""
    job = Job.objects.filter(pk=job_id, owner=request.user).select_related("image").first()
    images = job.stored_images() if job is not None else []
    if job is None or not 1 <= number <= len(images):
        raise Http404("No such image")
    image = images[number - 1]
    download = request.GET.get("download") == "1"
    name = file_name(job, image, number)
    if download or image.content_type in SHOWN_AS_SENT:
        response: HttpResponseBase = FileResponse(
            image.file.open("rb"), content_type=image.content_type, as_attachment=download, filename=name
        )
    else:
        with image.file.open("rb") as handle:
            response = HttpResponse(make_thumbnail(handle.read(), max(image.width, image.height)), "image/webp")
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def file_name(job: Job, image: StoredImage, number: int) -> str:
    """The upload's own name for a job's first image; "request-12-2.png" style for the rest."""
    if number == 1 and job.path:
        return posixpath.basename(job.path)
    return f"request-{job.pk}-{number}{image.extension}"
