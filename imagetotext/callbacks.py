"""Web callbacks (ReplyTo): build and sign a finished job's result, guard the address, deliver it.

Each time a job ends it gets one delivery: a random idempotency key, sent on every attempt
of that delivery so a receiver can drop the repeats. An attempt is delivered (2xx), failed
(nothing or not all of it was sent, or the receiver said no) or unknown (all of it was sent,
then no answer: the receiver may have it). Retries are ours (django-q2 never re-delivers a
task here): each attempt not delivered leaves a one-off Schedule for the next one, carrying
the key. django-q2 1.11 looks at schedules about every 30 seconds, so a retry runs between
its backoff delay and roughly 30 seconds after it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from imagetotext.conf import Conf
from imagetotext.models import CallbackAttempt, Job, Outcome, State
from imagetotext.replyto import InvalidReplyTo, ReplyTo, parse

logger = logging.getLogger(__name__)

TASK = "imagetotext.callbacks.deliver"
USER_AGENT = "ImageToTextServer-Callback/1.0"
CALLBACK_ID_HEADER = "X-Callback-Id"
ATTEMPT_HEADER = "X-Callback-Attempt"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class CallbackRefused(Exception):
    """The ReplyTo URL must not be called: bad scheme, unresolvable or non-public host."""


@dataclass(frozen=True)
class Result:
    """What one attempt came to, the receiver's status code if it answered, and why it was not delivered."""

    outcome: Outcome
    status_code: int | None = None
    error: str = ""


class BodyWatch:
    """httpcore's trace hook: notes when the whole request is written; silence after that is "unknown"."""

    def __init__(self) -> None:
        self.sent = False

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):
            self.sent = True


def callback_body(job: Job) -> dict[str, Any]:
    """The JSON document POSTed to ReplyTo, in AI Server's camelCase."""
    completed = job.state == State.COMPLETED
    return {
        "state": job.reply_state or None,
        "refId": job.ref_id,
        "outputs": [],  # AI Server's file outputs; image to text has none
        "textOutputs": [{"text": job.output}] if completed else [],
        "responseStatus": None if completed else failure_status(job),
    }


def failure_status(job: Job) -> dict[str, Any]:
    """A ServiceStack ResponseStatus for a failed or cancelled job."""
    return {"errorCode": job.error_code or job.state, "message": job.error or job.state, "errors": []}


def encode(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; encoded once because the signature covers exactly these bytes."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """GitHub-style signature: "sha256=" + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def new_key() -> str:
    return str(uuid.uuid4())


def request_headers(job: Job, body: bytes, number: int, key: str) -> dict[str, str]:
    """Headers sent with every attempt; the idempotency key lets receivers drop repeats of one delivery."""
    return {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        CALLBACK_ID_HEADER: job.ref_id,
        ATTEMPT_HEADER: str(number),
        # A Structured Field string, as the IETF's Idempotency-Key draft defines it.
        IDEMPOTENCY_HEADER: f'"{key}"',
        Conf.CALLBACK_SIGNATURE_HEADER: sign(body, Conf.CALLBACK_SECRET),
    }


def check_destination(url: str) -> list[str]:
    """Resolve the URL's host; return its addresses, or raise CallbackRefused if any is not public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused(f"Only http and https URLs with a host name are called back, not {url!r}")
    addresses = resolve(parts)
    if not Conf.CALLBACK_ALLOW_PRIVATE:
        for address in addresses:
            if not is_public(address):
                raise CallbackRefused(f"{parts.hostname} resolves to {address}, which is not a public address")
    return addresses


def resolve(parts: SplitResult) -> list[str]:
    """Every address the host resolves to, in the resolver's preferred order."""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except ValueError as error:
        raise CallbackRefused(f"Invalid port in callback URL: {error}") from error
    except (OSError, UnicodeError) as error:
        raise CallbackRefused(f"Cannot resolve {parts.hostname}: {error}") from error
    if not infos:
        raise CallbackRefused(f"Cannot resolve {parts.hostname}: no addresses")
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """False for loopback, private, link-local, reserved, multicast and unspecified addresses."""
    ip = ipaddress.ip_address(address)
    # An IPv6 address can carry an IPv4 one (::ffff:127.0.0.1, 2002:7f00:1::): judge that too.
    embedded = [ip.ipv4_mapped, ip.sixtofour] if isinstance(ip, ipaddress.IPv6Address) else []
    return all(public_ip(each) for each in [ip, *embedded] if each is not None)


def public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    blocked = ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
    return ip.is_global and not (blocked or ip.is_multicast or ip.is_unspecified)


def make_client() -> httpx.Client:
    """No proxies from the environment and no redirects: either would reach an unchecked address."""
    return httpx.Client(timeout=Conf.CALLBACK_TIMEOUT, trust_env=False, follow_redirects=False)


def post(
    reply: ReplyTo, addresses: list[str], body: bytes, headers: dict[str, str], watch: BodyWatch
) -> httpx.Response:
    """Send to the first checked address that accepts a connection, as a browser would."""
    target = httpx.URL(reply.url)
    # The ReplyTo's own credentials go first, so they cannot replace the signature.
    headers = {**reply.headers, **headers}
    with make_client() as client:
        for address in addresses[:-1]:
            try:
                return send(client, reply.method, target, address, body, headers, watch)
            except httpx.ConnectError:
                continue
        return send(client, reply.method, target, addresses[-1], body, headers, watch)


def send(
    client: httpx.Client,
    method: str,
    target: httpx.URL,
    address: str,
    body: bytes,
    headers: dict[str, str],
    watch: BodyWatch,
) -> httpx.Response:
    """Connect to the checked address, not to what the name resolves to now (DNS rebinding).

    Host keeps the URL's name, and sni_hostname makes TLS send and verify the certificate for it.
    """
    request = client.build_request(
        method,
        target.copy_with(host=address),
        content=body,
        headers={**headers, "Host": target.netloc.decode("ascii")},
        extensions={"sni_hostname": target.raw_host.decode("ascii"), "trace": watch},
    )
    # Streamed and closed unread: only the status matters, however large the reply.
    response = client.send(request, stream=True)
    response.close()
    return response


def attempt(job: Job, reply: ReplyTo, addresses: list[str], number: int, key: str) -> Result:
    """One request, and what came of it."""
    body = encode(callback_body(job))
    watch = BodyWatch()
    try:
        response = post(reply, addresses, body, request_headers(job, body, number, key), watch)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        # httpcore reads for an answer even after a failed write, so the exception alone cannot tell.
        if watch.sent:
            return Result(Outcome.UNKNOWN, error=f"Sent, but no answer: {describe(error)}")
        return Result(Outcome.FAILED, error=describe(error))
    if response.is_success:
        return Result(Outcome.DELIVERED, response.status_code)
    return Result(Outcome.FAILED, response.status_code, f"HTTP {response.status_code} {response.reason_phrase}".strip())


def describe(error: Exception) -> str:
    if isinstance(error, httpx.TimeoutException):
        return f"Timed out after {Conf.CALLBACK_TIMEOUT} s ({type(error).__name__})"
    if isinstance(error, httpx.ConnectError):
        return f"Could not connect: {error}"
    return f"{type(error).__name__}: {error}"


def deliver(job_id: int, number: int = 1, key: str = "") -> None:
    """The django-q2 task: attempt `number` of the delivery `key` (a new delivery without one)."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or not job.reply_to or not job.finished or number > Conf.CALLBACK_ATTEMPTS:
        return
    key = delivery_key(job, number, key)
    if not key:
        return
    try:
        reply = parse(job.reply_to)
        addresses = check_destination(reply.url)
    except (InvalidReplyTo, CallbackRefused) as refused:
        # Permanent: retrying will not make the address public.
        record(job, number, key, Result(Outcome.FAILED, error=str(refused)))
        return
    result = attempt(job, reply, addresses, number, key)
    record(job, number, key, result)
    if result.outcome != Outcome.DELIVERED and number < Conf.CALLBACK_ATTEMPTS:
        schedule_retry(job, number, key)


def delivery_key(job: Job, number: int, key: str) -> str:
    """The key this attempt sends; empty when the job was run again since and its new delivery began.

    A retry without a key (scheduled before keys existed) goes on with the latest delivery's.
    """
    if number == 1:
        return key or new_key()
    latest = job.callback_attempts.order_by("-pk").values_list("idempotency_key", flat=True).first() or ""
    if key and latest and key != latest:
        return ""  # superseded: the new delivery carries the result now
    return key or latest or new_key()


def record(job: Job, number: int, key: str, result: Result) -> CallbackAttempt:
    """Keep one row per attempt, and log those not delivered."""
    if result.outcome != Outcome.DELIVERED:
        outcome = "may not have arrived" if result.outcome == Outcome.UNKNOWN else "failed"
        logger.warning("Callback %s of job %s to %s %s: %s", number, job.pk, destination(job), outcome, result.error)
    return CallbackAttempt.objects.create(
        job=job,
        number=number,
        idempotency_key=key,
        outcome=result.outcome,
        status_code=result.status_code,
        error=result.error,
    )


def destination(job: Job) -> str:
    """Where the job's callback goes, for logs and pages: method and URL, never its credentials."""
    try:
        return str(parse(job.reply_to))
    except InvalidReplyTo:
        return "an invalid ReplyTo"


def retry_delay(failed_number: int) -> timedelta:
    """Exponential backoff after the given attempt was not delivered: B, 2B, 4B, ..."""
    return timedelta(seconds=Conf.CALLBACK_BACKOFF_SECONDS * 2 ** (failed_number - 1))


def schedule_retry(job: Job, failed_number: int, key: str) -> Schedule:
    """A one-off Schedule, not a sleep: a sleeping worker could run no image jobs meanwhile.

    The key is in the stored arguments, so the retry sends it whichever process runs it, and when.
    """
    following = failed_number + 1
    return Schedule.objects.create(
        name=f"Callback {following} of job {job.pk}",
        func=TASK,
        args=f"{job.pk}, {following}, {key!r}",
        schedule_type=Schedule.ONCE,
        repeats=-1,  # a ONCE schedule with negative repeats is deleted after it fires
        next_run=timezone.now() + retry_delay(failed_number),
    )


def queue_callback(job: Job) -> None:
    """Enqueue a new delivery when a job ends; call after its final state is committed.

    The key is made here, not in the task, so the broker keeps it should the task run twice.
    """
    if job.reply_to:
        async_task(TASK, job.pk, 1, new_key())
