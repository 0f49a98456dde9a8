"""ImageToText, QueueImageToText and GetTextGenerationStatus, as AI Server serves them."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from imagetotext.api.auth import ApiRequest, api_view
from imagetotext.api.wire import (
    error_response,
    fields_of,
    methods,
    refusal_response,
    reply,
    response_status,
    text_field,
    uploaded_image,
    xsd_duration,
)
from imagetotext.callbacks import CallbackRefused, check_destination
from imagetotext.conf import Conf
from imagetotext.dataset import sanitised_path
from imagetotext.db_threads import arun
from imagetotext.errors import Refusal
from imagetotext.images import read_uploaded_file
from imagetotext.jobs import JobRequest, create_with_upload, validate
from imagetotext.live import wait_until_finished
from imagetotext.models import Job, Preset, State
from imagetotext.replyto import InvalidReplyTo
from imagetotext.replyto import parse as parse_reply_to
from imagetotext.tasks import run_for_request


@csrf_exempt
@methods("POST")
@api_view("ImageToText")
async def image_to_text(request: ApiRequest) -> JsonResponse:
    """Run one image through a model and answer with the text (waits for the job)."""
    try:
        job = await arun(accept_job, request, queued=False)
    except Refusal as refusal:
        return refusal_response(refusal)
    job = await run_or_wait(job)
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
async def queue_image_to_text(request: ApiRequest) -> JsonResponse:
    """Queue the image and answer at once with where to ask for the result."""
    try:
        job = await arun(accept_job, request, queued=True)
    except Refusal as refusal:
        return refusal_response(refusal)
    return reply(
        {
            "jobId": job.pk,
            "refId": job.ref_id,
            "jobState": job.state,
            "status": job.status or job.state,
            "statusUrl": status_url(request, job),
        }
    )


@methods("GET")
@api_view("GetTextGenerationStatus")
async def get_text_generation_status(request: ApiRequest) -> JsonResponse:
    try:
        job = await arun(find_job, request)
    except Refusal as refusal:
        return refusal_response(refusal)
    body: dict[str, Any] = {
        "jobId": job.pk,
        "refId": job.ref_id,
        "jobState": job.state,
        "status": job.status or job.state,
        "duration": xsd_duration(job.duration) if job.finished else None,
    }
    if job.state == State.COMPLETED:
        body["results"] = [{"text": job.output}]
    elif job.finished:
        body["responseStatus"] = response_status(job.error, job.error_code)
    return reply(body)


def accept_job(request: ApiRequest, queued: bool) -> Job:
    """Read the request, keep the image and submit the job, all or nothing."""
    fields = fields_of(request)
    # A synchronous request sends the image on at once: decode it once, for the check and the backend.
    upload = uploaded_image(request)
    preset = find_preset(text_field(fields, "Preset", 50))
    longest_side = (preset.longest_side if preset else None) or Conf.RESIZE_LONGEST_SIDE
    image = read_uploaded_file(upload, None if queued else longest_side)
    job_request = JobRequest(
        owner=request.owner,
        api_key=request.api_key,
        model=text_field(fields, "Model", 200),
        prompt=text_field(fields, "Prompt"),
        florence_task=text_field(fields, "Task", 50),
        preset=preset,
        ref_id=text_field(fields, "RefId", 100),
        tag=text_field(fields, "Tag", 100) or request.headers.get("Tag", ""),
        path=sanitised_path(upload.name or "")[0],
    )
    if queued:
        job_request.reply_to = reply_to(request, fields)
        job_request.reply_state = text_field(fields, "State", 2000)
    return create_with_upload(validate(job_request), image, hand_to_workers=queued)


def find_preset(key: str) -> Preset | None:
    """The preset a request names (its prompt, Florence task and longest side stand in for missing ones), or None."""
    if not key:
        return None
    preset = Preset.objects.filter(key=key).first()
    if preset is None:
        raise Refusal(f"Unknown preset {key!r}", field="Preset")
    return preset


def reply_to(request: HttpRequest, fields: dict[str, Any]) -> str:
    """The ReplyTo (field or header), refused early if it is malformed or points inside."""
    text = text_field(fields, "ReplyTo", 2000) or request.headers.get("ReplyTo", "")
    if text:
        try:
            check_destination(parse_reply_to(text).url)
        except (InvalidReplyTo, CallbackRefused) as error:
            raise Refusal(f"ReplyTo is not allowed: {error}", field="ReplyTo") from None
    return text


def find_job(request: ApiRequest) -> Job:
    """The caller's job by JobId or RefId; other owners' jobs do not exist for them."""
    fields = fields_of(request)
    jobs = Job.objects.owned_by(request.owner)
    job_id, ref_id = text_field(fields, "JobId"), text_field(fields, "RefId")
    if job_id:
        if not (job_id.isascii() and job_id.isdigit()):  # isdigit() passes '²' and '٣', which int() misreads
            raise Refusal("JobId must be a number", field="JobId")
        job = jobs.filter(pk=int(job_id)).first()
    elif ref_id:
        job = jobs.filter(ref_id=ref_id).first()
    else:
        raise Refusal("Give a JobId or a RefId", field="JobId")
    if job is None:
        raise Refusal("Job not found", 404, "NotFound", "JobId" if job_id else "RefId")
    return job


async def run_or_wait(job: Job) -> Job:
    """A synchronous request's job once it ended: run here if it got an agent as it was created,
    else followed while a worker runs it.

    Answers with the job as it is after Conf.SYNC_WAIT_SECONDS even if it has not ended; a job
    running here goes on in its thread.
    """
    started = time.monotonic()
    if job.runs_here:
        running = asyncio.ensure_future(run_for_request(job))
        try:
            ran = await asyncio.wait_for(asyncio.shield(running), Conf.SYNC_WAIT_SECONDS)
        except TimeoutError:
            ran = None
        if ran is not None and ran.finished:
            return ran  # the usual case: it ran here and ended
    left = max(Conf.SYNC_WAIT_SECONDS - (time.monotonic() - started), 0)
    return await wait_until_finished(job.pk, left)


def status_url(request: HttpRequest, job: Job, route: str = "get-text-generation-status") -> str:
    """Where to ask for the job; the RefId is the client's own text, so it is URL-encoded."""
    return request.build_absolute_uri(reverse(route) + "?" + urlencode({"RefId": job.ref_id}))
