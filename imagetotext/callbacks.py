"""Web callbacks (ReplyTo): build and sign a finished job's result, guard the address, deliver it.

Each time a job ends it owes one delivery: a CallbackDelivery row written in the transaction
that ends the job (an outbox), so no crash can lose it, with a random idempotency key sent on
every attempt so a receiver can drop the repeats. An attempt is delivered (2xx), failed
(nothing or not all of it was sent, or the receiver said no) or unknown (all of it was sent,
then no answer: the receiver may have it).

django-q2 hands out a task at most once here, so the outbox, not the broker, makes sure each
delivery is made. Whoever makes an attempt first claims it: a conditional update that moves
the delivery's due time past the longest an attempt can take. A delivery is enqueued once it
is committed, and after an attempt not delivered it is due again after its backoff;
send_overdue(), called by every process's lease heartbeat and the scheduled safety net,
enqueues what is due: a retry, or a delivery whose task or sender was lost (its claim ran out).
So every delivery is made at least once, one process at a time, a repeat always with its key.

A batch with a ReplyTo owes one delivery when its last item ends (owe_batch, in that item's
transaction): the batch's status document, sent the same way, X-Callback-Id its RefId.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from aiserver.tls import client_context
from imagetotext.conf import Conf
from imagetotext.models import (
    FINISHED,
    Batch,
    CallbackAttempt,
    CallbackDelivery,
    DeliveryState,
    Job,
    Outcome,
    State,
)
from imagetotext.replyto import InvalidReplyTo, ReplyTo, parse

logger = logging.getLogger(__name__)

TASK = "imagetotext.callbacks.send_delivery"
# An attempt's claim outlasts its request: httpx times the connect, the write and the read each
# on their own (Conf.CALLBACK_TIMEOUT apiece), and the name is resolved before that.
CLAIM_MARGIN_SECONDS = 10
# Deliveries send_overdue enqueues per call, so a heartbeat after an outage stays short.
OVERDUE_BATCH = 200
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


def request_headers(job: Job | Batch, body: bytes, number: int, key: str) -> dict[str, str]:
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
    return httpx.Client(timeout=Conf.CALLBACK_TIMEOUT, trust_env=False, follow_redirects=False, verify=client_context())


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


def attempt(job: Job | Batch, reply: ReplyTo, addresses: list[str], number: int, key: str) -> Result:
    """One request, and what came of it."""
    body = encode(callback_body(job) if isinstance(job, Job) else batch_callback_body(job))
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


def owing(state: str) -> AbstractContextManager[object]:
    """Where a job's end is saved: in a transaction of its own unless the caller holds one, so the
    end and the delivery it owes are committed together."""
    if state in FINISHED and not transaction.get_connection().in_atomic_block:
        return transaction.atomic()
    return nullcontext()


def owe(job: Job) -> CallbackDelivery | None:
    """Record the delivery a job that just ended owes its ReplyTo; call in the transaction that ends it.

    The key is made and stored here, so every attempt sends it whichever process makes it. The
    delivery is enqueued once committed, and claimed until then: nobody else sends it meanwhile.
    """
    if not job.reply_to:
        return None
    delivery = CallbackDelivery.objects.create(job=job, key=new_key(), due_at=claim_end())
    # Robust: if the broker is away, the delivery is sent once its claim runs out (send_overdue).
    transaction.on_commit(partial(enqueue, delivery.pk, 1), robust=True)
    return delivery


def owe_batch(batch: Batch) -> CallbackDelivery | None:
    """Record the one delivery a batch owes its ReplyTo once every item ended; call in that transaction."""
    if not batch.reply_to:
        return None
    delivery = CallbackDelivery.objects.create(batch=batch, key=new_key(), due_at=claim_end())
    transaction.on_commit(partial(enqueue, delivery.pk, 1), robust=True)
    return delivery


def batch_callback_body(batch: Batch) -> dict[str, Any]:
    """The batch's status document with every item; the client's State comes back as replyState
    (state is the batch's own, as GetBatchStatus says it)."""
    from imagetotext.batches import status_document  # batches uses jobs, which uses this module

    return {**status_document(batch), "replyState": batch.reply_state or None}


def claim_end() -> datetime:
    return timezone.now() + timedelta(seconds=3 * Conf.CALLBACK_TIMEOUT + CLAIM_MARGIN_SECONDS)


def enqueue(delivery_id: int, number: int) -> None:
    async_task(TASK, delivery_id, number)


def send_overdue() -> int:
    """Enqueue each delivery that is due: a retry, or one whose task or sender was lost; returns how many.

    Cheap when nothing is due (one query on an index), and safe from many processes at once:
    each delivery is taken by a conditional update on the due time read, so one caller
    enqueues it, and holds it for as long as a claim lasts in case that task is lost too.
    """
    enqueued = 0
    for pk, due_at, attempts in overdue():
        if CallbackDelivery.objects.filter(pk=pk, due_at=due_at).update(due_at=claim_end()):
            enqueue(pk, attempts + 1)
            enqueued += 1
    return enqueued


def overdue() -> list[tuple[int, datetime | None, int]]:
    """The deliveries due now, oldest first: id, due time and attempts made."""
    due = CallbackDelivery.objects.filter(due_at__lte=timezone.now(), state=DeliveryState.PENDING).order_by("due_at")
    return list(due.values_list("pk", "due_at", "attempts")[:OVERDUE_BATCH])


def send_delivery(delivery_id: int, number: int) -> None:
    """The django-q2 task: make attempt `number` of a delivery, unless another process claimed it first."""
    delivery = claim(delivery_id, number)
    if delivery is not None:
        note_lost_attempt(delivery, number)
        make_attempt(delivery, number)


def make_attempt(delivery: CallbackDelivery, number: int) -> None:
    """Attempt `number` of a claimed delivery, recorded; none if the job has run again or no attempt is left."""
    job = subject(delivery)
    if superseded(delivery):
        settle(delivery, number, state=DeliveryState.SUPERSEDED)  # its new end owes a new delivery
        return
    if number > Conf.CALLBACK_ATTEMPTS:  # the last attempt's sender died (or the limit was lowered)
        settle(delivery, number, state=DeliveryState.GIVEN_UP)
        return
    try:
        reply = parse(job.reply_to)
        addresses = check_destination(reply.url)
    except (InvalidReplyTo, CallbackRefused) as refused:
        # Permanent: retrying will not make the address public.
        record(delivery, number, Result(Outcome.FAILED, error=str(refused)), final=True)
        return
    record(delivery, number, attempt(job, reply, addresses, number, delivery.key))


def subject(delivery: CallbackDelivery) -> Job | Batch:
    """What the delivery calls back about: its job, or its batch."""
    owner = delivery.batch if delivery.batch_id else delivery.job
    assert owner is not None
    return owner


def superseded(delivery: CallbackDelivery) -> bool:
    """Run again (a job, or a batch's retried items) since: its new end owes a new delivery."""
    if delivery.batch is not None:
        batch = delivery.batch
        return batch.finished_at is None or batch.callback_deliveries.filter(pk__gt=delivery.pk).exists()
    assert delivery.job is not None
    job = delivery.job
    return not job.finished or job.callback_deliveries.filter(pk__gt=delivery.pk).exists()


def claim(delivery_id: int, number: int) -> CallbackDelivery | None:
    """Take attempt `number` if it is still to be made (a conditional update); the delivery, or None."""
    unclaimed = CallbackDelivery.objects.filter(pk=delivery_id, state=DeliveryState.PENDING, attempts=number - 1)
    if not unclaimed.update(attempts=number, due_at=claim_end()):
        return None
    return CallbackDelivery.objects.select_related("job", "batch").filter(pk=delivery_id).first()


def settle(delivery: CallbackDelivery, number: int, **changes: Any) -> None:
    """Change the delivery while attempt `number` is still the one claimed.

    A sender slower than its claim must not decide for the process that took over from it,
    unless its attempt was delivered: then nothing more needs sending, whoever holds it now.
    """
    current = CallbackDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.PENDING)
    if changes.get("state") != DeliveryState.DELIVERED:
        current = current.filter(attempts=number)
    if "state" in changes:
        changes["due_at"] = None  # settled: off the index of work to do
    current.update(**changes)


def note_lost_attempt(delivery: CallbackDelivery, number: int) -> None:
    """The previous attempt's process died before recording it (its claim ran out): say so on the job."""
    previous = number - 1
    of_owner = Q(batch=delivery.batch) if delivery.batch_id else Q(job=delivery.job)  # on the owner's index
    made = CallbackAttempt.objects.filter(of_owner, number=previous, idempotency_key=delivery.key)
    if previous and not made.exists():
        error = "The process making this attempt stopped before it recorded what came of it."
        record_attempt(delivery, previous, Result(Outcome.UNKNOWN, error=error))


def record(delivery: CallbackDelivery, number: int, result: Result, final: bool = False) -> CallbackAttempt:
    """Keep the attempt, and settle the delivery or make it due again after the backoff, together."""
    if result.outcome == Outcome.DELIVERED:
        changes: dict[str, Any] = {"state": DeliveryState.DELIVERED}
    elif final or number >= Conf.CALLBACK_ATTEMPTS:
        changes = {"state": DeliveryState.GIVEN_UP}
    else:
        changes = {"due_at": timezone.now() + retry_delay(number)}
    with transaction.atomic():
        row = record_attempt(delivery, number, result)
        settle(delivery, number, **changes)
    return row


def record_attempt(delivery: CallbackDelivery, number: int, result: Result) -> CallbackAttempt:
    """Keep one row per attempt, and log those not delivered."""
    job = subject(delivery)
    if result.outcome != Outcome.DELIVERED:
        outcome = "may not have arrived" if result.outcome == Outcome.UNKNOWN else "failed"
        logger.warning(
            "Callback %s of %s to %s %s: %s", number, describe_subject(job), destination(job), outcome, result.error
        )
    return CallbackAttempt.objects.create(
        job=delivery.job,
        batch=delivery.batch,
        number=number,
        idempotency_key=delivery.key,
        outcome=result.outcome,
        status_code=result.status_code,
        error=result.error,
    )


def describe_subject(job: Job | Batch) -> str:
    return f"job {job.pk}" if isinstance(job, Job) else f"batch {job.pk}"


def destination(job: Job | Batch) -> str:
    """Where the job's callback goes, for logs and pages: method and URL, never its credentials."""
    try:
        return str(parse(job.reply_to))
    except InvalidReplyTo:
        return "an invalid ReplyTo"


def retry_delay(failed_number: int) -> timedelta:
    """Exponential backoff after the given attempt was not delivered: B, 2B, 4B, ..."""
    return timedelta(seconds=Conf.CALLBACK_BACKOFF_SECONDS * 2 ** (failed_number - 1))


def deliver(job_id: int, number: int = 1, key: str = "") -> None:
    """Tasks and retry Schedules stored by the version before the outbox (job, attempt, key): owe
    the rest of that delivery now, and make the attempt.

    A retry without a key (stored before keys existed) goes on with the latest attempt's.
    """
    job = Job.objects.filter(pk=job_id).first()
    if job is None or not job.reply_to or not job.finished or job.callback_deliveries.exists():
        return  # gone, running again, or owed by the outbox already
    latest = job.callback_attempts.order_by("-pk").values_list("idempotency_key", flat=True).first() or ""
    if number > 1 and key and latest and key != latest:
        return  # superseded: the job was run again and called back anew
    key = key or (latest if number > 1 else "") or new_key()
    delivery = CallbackDelivery.objects.create(job=job, key=key, attempts=number, due_at=claim_end())  # claimed
    make_attempt(delivery, number)
