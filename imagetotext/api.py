"""ImageToText, QueueImageToText and GetTextGenerationStatus, as AI Server serves them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from aiserver.responses import error_response, methods, response_status
from imagetotext.auth import api_view
from imagetotext.callbacks import CallbackRefused, check_destination
from imagetotext.conf import Conf
from imagetotext.images import ImageRejected, read_upload
from imagetotext.jobs import JobRefused, JobRequest, submit_upload
from imagetotext.models import Job, State
from imagetotext.replyto import InvalidReplyTo, parse as parse_reply_to
from imagetotext.wire import BadRequest, fields_of, reply, text_field, uploaded_image, xsd_duration

POLL_SECONDS = 0.2


@csrf_exempt
@methods("POST")
@api_view("ImageToText")
async def image_to_text(request: HttpRequest) -> JsonResponse:
    """Run one image through a model and answer with the text (waits for the job)."""
    try:
        job = await sync_to_async(accept_job)(request, queued=False)
    except (BadRequest, JobRefused, ImageRejected) as error:
        return refusal(error)
    job = await wait_until_finished(job.pk, Conf.SYNC_WAIT_SECONDS)
    if job.state == State.COMPLETED:
        return reply({"results": [{"text": job.output}], "duration": xsd_duration(job.duration)})
    if job.finished:
        return error_response(500, job.error or f"The job was {job.state.lower()}", job.error_code or "Exception")
    url = status_url(request, job)
    message = f"The job did not finish within {Conf.SYNC_WAIT_SECONDS:g} s and is still running: {url}"
    return error_response(500, message, "Timeout")


@csrf_exempt
@methods("POST")
@api_view("QueueImageToText")
def queue_image_to_text(request: HttpRequest) -> JsonResponse:
    """Queue the image and answer at once with where to ask for the result."""
    try:
        job = accept_job(request, queued=True)
    except (BadRequest, JobRefused, ImageRejected) as error:
        return refusal(error)
    return reply(
        {"jobId": job.pk, "refId": job.ref_id, "jobState": job.state, "status": job.status or job.state,
         "statusUrl": status_url(request, job)}
    )


@methods("GET")
@api_view("GetTextGenerationStatus")
def get_text_generation_status(request: HttpRequest) -> JsonResponse:
    try:
        job = find_job(request)
    except BadRequest as error:
        return error.response()
    body: dict[str, Any] = {
        "jobId": job.pk, "refId": job.ref_id, "jobState": job.state, "status": job.status or job.state,
        "duration": xsd_duration(job.duration) if job.finished else None,
    }
    if job.state == State.COMPLETED:
        body["results"] = [{"text": job.output}]
    elif job.finished:
        body["responseStatus"] = response_status(job.error, job.error_code)
    return reply(body)


def accept_job(request: HttpRequest, queued: bool) -> Job:
    """Read the request, keep the image and submit the job, all or nothing."""
    fields = fields_of(request)
    upload = uploaded_image(request)
    if upload.size and upload.size > Conf.MAX_UPLOAD_BYTES:
        raise ImageRejected(f"The image is larger than {Conf.MAX_UPLOAD_BYTES // 2**20} MB", 413, "ImageTooLarge")
    image = read_upload(upload.read())
    job_request = JobRequest(
        owner=request.owner, api_key=request.api_key, image=None,  # type: ignore[attr-defined]
        model=text_field(fields, "Model", 200), prompt=text_field(fields, "Prompt"),
        florence_task=text_field(fields, "Task", 50), ref_id=text_field(fields, "RefId", 100),
        tag=text_field(fields, "Tag", 100) or request.headers.get("Tag", ""),
    )
    if queued:
        job_request.reply_to = reply_to(request, fields)
        job_request.reply_state = text_field(fields, "State", 2000)
    return submit_upload(job_request, image)


def reply_to(request: HttpRequest, fields: dict[str, Any]) -> str:
    """The ReplyTo (field or header), refused early if it is malformed or points inside."""
    text = text_field(fields, "ReplyTo", 2000) or request.headers.get("ReplyTo", "")
    if text:
        try:
            check_destination(parse_reply_to(text).url)
        except (InvalidReplyTo, CallbackRefused) as error:
            raise BadRequest(f"ReplyTo is not allowed: {error}", "ReplyTo") from None
    return text


def find_job(request: HttpRequest) -> Job:
    """The caller's job by JobId or RefId; other owners' jobs do not exist for them."""
    fields = fields_of(request)
    jobs = Job.objects.owned_by(request.owner)  # type: ignore[attr-defined]
    job_id, ref_id = text_field(fields, "JobId"), text_field(fields, "RefId")
    if job_id:
        if not job_id.isdigit():
            raise BadRequest("JobId must be a number", "JobId")
        job = jobs.filter(pk=int(job_id)).first()
    elif ref_id:
        job = jobs.filter(ref_id=ref_id).first()
    else:
        raise BadRequest("Give a JobId or a RefId", "JobId")
    if job is None:
        raise BadRequest("Job not found", "JobId" if job_id else "RefId", 404, "NotFound")
    return job


async def wait_until_finished(job_id: int, seconds: float) -> Job:
    deadline = time.monotonic() + seconds
    while True:
        job = await Job.objects.aget(pk=job_id)
        if job.finished or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(POLL_SECONDS)


def status_url(request: HttpRequest, job: Job) -> str:
    return request.build_absolute_uri(reverse("get-text-generation-status") + f"?RefId={job.ref_id}")


def refusal(error: BadRequest | JobRefused | ImageRejected) -> JsonResponse:
    if isinstance(error, BadRequest):
        return error.response()
    if isinstance(error, JobRefused):
        return error_response(error.status, error.message, error.code, error.field)
    return error_response(error.status, error.message, error.code, "Image")
