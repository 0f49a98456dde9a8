"""ReplyTo callbacks: signed bodies over real HTTP, retries with backoff, and refusal of private hosts.

Only loopback is ever contacted: refused destinations and "public" hosts are sent through an
httpx MockTransport, so a broken guard fails the test instead of reaching the network. The
broker is replaced by a list (`broker`), so each test decides when a worker takes a task.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from django.utils import timezone

from imagetotext import callbacks, jobs
from imagetotext.callbacks import CallbackRefused, check_destination, owe, send_delivery, send_overdue
from imagetotext.conf import Conf
from imagetotext.models import CallbackAttempt, CallbackDelivery, DeliveryState, Job, Outcome, State

SECRET = "test-callback-secret"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A ReplyTo endpoint on 127.0.0.1 that records requests and answers `status`.

    It answers `delay` seconds late (stop() cuts the wait short), or with `drop` reads the
    request and hangs up without an answer.
    """

    status: int = 200
    delay: float = 0.0
    drop: bool = False
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?x=1"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(Received(self.path, dict(self.headers), body, self.command))
                if receiver.drop:
                    self.close_connection = True
                    return
                receiver.release.wait(receiver.delay)
                try:
                    self.send_response(receiver.status)
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    self.close_connection = True  # the caller gave up waiting

            do_PUT = do_PATCH = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def callback_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver is on loopback, so private addresses are allowed unless a test says otherwise."""
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", True)
    monkeypatch.setattr(Conf, "CALLBACK_SECRET", SECRET)
    monkeypatch.setattr(Conf, "CALLBACK_ATTEMPTS", 5)
    monkeypatch.setattr(Conf, "CALLBACK_BACKOFF_SECONDS", 2.0)
    monkeypatch.setattr(Conf, "CALLBACK_TIMEOUT", 2)


@pytest.fixture
def mock_requests(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """Swap the network for a MockTransport that answers 200 and records what would be sent."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    monkeypatch.setattr(callbacks, "make_client", lambda: httpx.Client(transport=httpx.MockTransport(answer)))
    return sent


def fake_dns(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """Make every host name resolve to the given addresses, without asking DNS."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    monkeypatch.setattr(callbacks.socket, "getaddrinfo", getaddrinfo)


@dataclass
class Broker:
    """Stands in for django-q2's broker: keeps the tasks enqueued; run() is a worker taking them."""

    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    lose: bool = False  # the process dies before its enqueue reaches the broker
    inline: bool = False  # a worker takes each task at once, in the enqueuing thread

    def enqueue(self, func: str, *args: Any, **kwargs: Any) -> None:
        assert func == callbacks.TASK
        if self.inline:
            send_delivery(*args)
        elif not self.lose:
            self.tasks.append(args)

    def run(self) -> None:
        while self.tasks:
            send_delivery(*self.tasks.pop(0))


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    queue = Broker()
    monkeypatch.setattr(callbacks, "async_task", queue.enqueue)
    return queue


def finished_job(owner: Any, reply_to: str, state: str = "Completed", **fields: Any) -> Job:
    job = Job.objects.create(owner=owner, model="llava:7b", reply_to=reply_to, reply_state="client-42")
    Job.objects.filter(pk=job.pk).update(state=state, finished_at=timezone.now(), **fields)
    return Job.objects.get(pk=job.pk)


def deliver_first(job: Job) -> CallbackDelivery:
    """Owe the job's delivery and make its first attempt, as the task enqueued on commit does."""
    delivery = owe(job)
    assert delivery is not None
    send_delivery(delivery.pk, 1)
    delivery.refresh_from_db()
    return delivery


def time_passes(delivery: CallbackDelivery) -> None:
    """Its backoff (or claim) has run out."""
    CallbackDelivery.objects.filter(pk=delivery.pk).update(due_at=timezone.now() - timedelta(milliseconds=1))


def run_next_retry(delivery: CallbackDelivery, broker: Broker) -> None:
    """What a heartbeat does once the retry is due: enqueue it; then a worker makes the attempt."""
    time_passes(delivery)
    assert send_overdue() == 1
    broker.run()
    delivery.refresh_from_db()


def run_due_retries(delivery: CallbackDelivery, broker: Broker) -> None:
    while delivery.state == DeliveryState.PENDING:
        run_next_retry(delivery, broker)


def attempts(job: Job) -> list[CallbackAttempt]:
    return list(job.callback_attempts.order_by("number", "pk"))


def retry_due_in(delivery: CallbackDelivery) -> timedelta | None:
    """How long until the next attempt, or None when no attempt will follow."""
    delivery.refresh_from_db()
    if delivery.state != DeliveryState.PENDING:
        return None
    assert delivery.due_at is not None
    return delivery.due_at - timezone.now()


# Delivery ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_posts_a_completed_jobs_text_with_a_valid_signature(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, receiver.url, output="A wolf by a lake")
    delivery = deliver_first(job)

    [request] = receiver.requests
    assert request.path == "/hook?x=1"
    assert request.json() == {
        "state": "client-42",
        "refId": job.ref_id,
        "outputs": [],
        "textOutputs": [{"text": "A wolf by a lake"}],
        "responseStatus": None,
    }
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Signature-256"], expected)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["X-Callback-Id"] == job.ref_id
    assert "ImageToText" in request.headers["User-Agent"]
    [attempt] = attempts(job)
    assert (attempt.number, attempt.status_code, attempt.outcome, attempt.error) == (1, 200, Outcome.DELIVERED, "")
    assert request.headers["Idempotency-Key"] == f'"{delivery.key}"' == f'"{attempt.idempotency_key}"'
    assert uuid.UUID(delivery.key)
    assert (delivery.state, delivery.attempts, delivery.due_at) == (DeliveryState.DELIVERED, 1, None)


@pytest.mark.django_db
def test_a_token_before_the_url_is_sent_as_a_bearer_token_and_kept_out_of_the_log(
    admin_user: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, "tok-123@" + receiver.url)

    deliver_first(job)

    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hook?x=1"
    assert request.headers["Authorization"] == "Bearer tok-123"
    assert "X-Signature-256" in request.headers
    assert "HTTP 500" in caplog.text and "tok-123" not in caplog.text


@pytest.mark.django_db
def test_a_method_and_basic_credentials_in_reply_to_are_used(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, "PUT ann:s3cret@" + receiver.url)

    deliver_first(job)

    [request] = receiver.requests
    assert request.method == "PUT"
    assert request.headers["Authorization"] == "Basic YW5uOnMzY3JldA=="  # ann:s3cret
    assert request.json()["refId"] == job.ref_id


@pytest.mark.django_db
def test_a_header_credential_in_reply_to_is_sent_as_that_header(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, "http.X-API-Key:key-9@" + receiver.url)

    deliver_first(job)

    [request] = receiver.requests
    assert request.headers["X-API-Key"] == "key-9"
    assert "Authorization" not in request.headers


@pytest.mark.django_db
def test_a_reply_to_asking_for_a_server_variable_is_recorded_as_refused_and_not_sent(
    admin_user: Any, receiver: Receiver
) -> None:
    job = finished_job(admin_user, "$SECRET_KEY@" + receiver.url)

    delivery = deliver_first(job)

    assert receiver.requests == []
    [attempt] = attempts(job)
    assert not attempt.delivered and "environment" in attempt.error
    assert delivery.state == DeliveryState.GIVEN_UP


@pytest.mark.django_db
def test_the_body_is_compact_utf8_json(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, receiver.url, output="Café — 東京")
    deliver_first(job)

    body = receiver.requests[0].body
    assert "Café — 東京".encode() in body
    assert b", " not in body and b'": ' not in body


@pytest.mark.django_db
def test_it_reports_a_failed_jobs_error_in_response_status(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, receiver.url, "Failed", error_code="ModelNotFound", error="No agent has llava:7b")
    deliver_first(job)

    assert receiver.requests[0].json() == {
        "state": "client-42",
        "refId": job.ref_id,
        "outputs": [],
        "textOutputs": [],
        "responseStatus": {"errorCode": "ModelNotFound", "message": "No agent has llava:7b", "errors": []},
    }


@pytest.mark.django_db
def test_a_cancelled_job_reports_cancelled(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, receiver.url, "Cancelled")
    job.reply_state = ""
    job.save()
    deliver_first(job)

    body = receiver.requests[0].json()
    assert body["state"] is None
    assert body["responseStatus"]["errorCode"] == "Cancelled"


@pytest.mark.django_db
def test_it_connects_to_the_checked_address_even_if_the_name_rebinds(
    admin_user: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first answer is the one checked; later ones point elsewhere (127.0.0.2, where nothing listens).
    answers = iter(["127.0.0.1"])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_dns(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host != "hooks.example.test":  # the socket layer looks up IP literals too
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "127.0.0.2"), port))]

    monkeypatch.setattr(callbacks.socket, "getaddrinfo", rebinding_dns)
    job = finished_job(admin_user, f"http://hooks.example.test:{receiver.port}/hook", output="text")
    deliver_first(job)

    assert receiver.requests[0].headers["Host"] == f"hooks.example.test:{receiver.port}"
    assert attempts(job)[0].delivered


@pytest.mark.django_db
def test_a_job_without_reply_to_owes_nothing(admin_user: Any) -> None:
    assert owe(finished_job(admin_user, "")) is None
    assert CallbackDelivery.objects.count() == 0


@pytest.mark.django_db
def test_a_delivery_of_a_job_running_again_sends_nothing(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, receiver.url, output="first run")
    delivery = owe(job)
    assert delivery is not None
    Job.objects.filter(pk=job.pk).update(state=State.QUEUED, finished_at=None)  # run again before it was sent

    send_delivery(delivery.pk, 1)

    assert receiver.requests == []
    assert CallbackAttempt.objects.count() == 0
    delivery.refresh_from_db()
    assert (delivery.state, delivery.due_at) == (DeliveryState.SUPERSEDED, None)


@pytest.mark.django_db
def test_a_job_that_ends_owes_one_delivery_enqueued_once_committed(
    admin_user: Any, broker: Broker, django_capture_on_commit_callbacks: Any
) -> None:
    with_reply = Job.objects.create(owner=admin_user, model="llava:7b", reply_to="https://hooks.example.com/done")
    without = Job.objects.create(owner=admin_user, model="llava:7b", ref_id="r2")
    with django_capture_on_commit_callbacks() as committing:
        jobs.fail(with_reply, "No agent")
        jobs.cancel(without)
        [delivery] = CallbackDelivery.objects.all()
    assert broker.tasks == []  # not before the job's end is committed

    for callback in committing:
        callback()
    assert broker.tasks == [(delivery.pk, 1)]
    assert (delivery.job, delivery.state, delivery.attempts) == (with_reply, DeliveryState.PENDING, 0)
    assert uuid.UUID(delivery.key)


# Failures and retries -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_500_is_recorded_and_retried_after_the_backoff(admin_user: Any, receiver: Receiver) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    before = timezone.now()
    delivery = deliver_first(job)

    [attempt] = attempts(job)
    assert (attempt.status_code, attempt.outcome) == (500, Outcome.FAILED)
    assert "500" in attempt.error
    assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 1)
    assert delivery.due_at is not None
    assert before + timedelta(seconds=2) <= delivery.due_at <= timezone.now() + timedelta(seconds=2)


@pytest.mark.django_db
def test_the_backoff_doubles_and_stops_after_the_last_attempt(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    receiver.status = 503
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    for made in range(1, 5):
        delay = retry_due_in(delivery)
        assert delay is not None and delay <= timedelta(seconds=2 * 2 ** (made - 1))
        run_next_retry(delivery, broker)

    assert [a.number for a in attempts(job)] == [1, 2, 3, 4, 5]
    assert [r.headers["X-Callback-Attempt"] for r in receiver.requests] == ["1", "2", "3", "4", "5"]
    assert retry_due_in(delivery) is None
    assert (delivery.state, delivery.attempts) == (DeliveryState.GIVEN_UP, 5)
    assert send_overdue() == 0 and broker.tasks == []


@pytest.mark.django_db
def test_the_retry_delays_are_2_4_8_16_seconds(admin_user: Any, receiver: Receiver, broker: Broker) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    delays = []
    for _ in range(4):
        assert delivery.due_at is not None
        delays.append((delivery.due_at - attempts(job)[-1].attempted_at).total_seconds())
        run_next_retry(delivery, broker)

    assert [round(seconds) for seconds in delays] == [2, 4, 8, 16]


@pytest.mark.django_db
def test_send_overdue_turns_a_due_retry_into_one_task_and_none_before_it_is_due(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    assert send_overdue() == 0  # its backoff has not run out

    time_passes(delivery)

    assert send_overdue() == 1
    assert send_overdue() == 0  # held for the task enqueued
    assert broker.tasks == [(delivery.pk, 2)]


@pytest.mark.django_db
def test_a_retry_that_succeeds_is_delivered_and_ends_the_retries(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    receiver.status = 204
    run_next_retry(delivery, broker)

    assert [(a.number, a.delivered) for a in attempts(job)] == [(1, False), (2, True)]
    assert retry_due_in(delivery) is None and delivery.state == DeliveryState.DELIVERED
    assert receiver.requests[1].headers["X-Callback-Attempt"] == "2"


@pytest.mark.django_db
def test_a_redirect_is_a_failure_and_is_not_followed(admin_user: Any, receiver: Receiver) -> None:
    receiver.status = 302
    job = finished_job(admin_user, receiver.url, output="text")
    deliver_first(job)

    assert len(receiver.requests) == 1
    assert attempts(job)[0].status_code == 302
    assert not attempts(job)[0].delivered


@pytest.mark.django_db
def test_a_receiver_that_is_down_is_recorded_with_a_readable_error(admin_user: Any) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    job = finished_job(admin_user, f"http://127.0.0.1:{port}/hook", output="text")
    delivery = deliver_first(job)

    [attempt] = attempts(job)
    assert attempt.status_code is None
    assert "Could not connect" in attempt.error and "refused" in attempt.error.lower()
    assert retry_due_in(delivery) is not None


@pytest.mark.django_db
def test_a_receiver_that_hangs_times_out_and_is_retried(
    admin_user: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Conf, "CALLBACK_TIMEOUT", 0.3)
    receiver.delay = 10
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)

    [attempt] = attempts(job)
    assert attempt.error.startswith("Sent, but no answer: Timed out after 0.3 s")
    assert retry_due_in(delivery) is not None


# Refused destinations -----------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://0.0.0.0:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]/",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "http:///no-host",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", REFUSED)
def test_private_and_non_http_destinations_are_refused_without_a_request(
    url: str, admin_user: Any, receiver: Receiver, mock_requests: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", False)
    job = finished_job(admin_user, url.format(port=receiver.port), output="text")
    delivery = deliver_first(job)

    assert mock_requests == [] and receiver.requests == []
    [attempt] = attempts(job)
    assert (attempt.number, attempt.outcome, attempt.status_code) == (1, Outcome.FAILED, None)
    assert "not a public address" in attempt.error or "Only http and https" in attempt.error
    assert delivery.state == DeliveryState.GIVEN_UP  # not retried


def test_an_unresolvable_host_is_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(callbacks.socket, "getaddrinfo", no_such_host)
    with pytest.raises(CallbackRefused, match="Cannot resolve nowhere.example: .*not known"):
        check_destination("https://nowhere.example/hook")


def test_allow_private_lets_loopback_through(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_destination("http://127.0.0.1:8000/hook") == ["127.0.0.1"]
    assert "::1" in check_destination("http://[::1]:8000/hook")
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", False)
    with pytest.raises(CallbackRefused, match="127.0.0.1"):
        check_destination("http://127.0.0.1:8000/hook")


# DNS: names are judged by what they resolve to ----------------------------------------------


@pytest.mark.parametrize("addresses", [["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["2002:7f00:1::"]])
def test_a_public_name_resolving_to_a_private_address_is_refused(
    addresses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", False)
    fake_dns(monkeypatch, *addresses)
    with pytest.raises(CallbackRefused, match="hooks.example.com resolves to .* not a public address"):
        check_destination("https://hooks.example.com/done")


def test_a_public_name_resolving_to_a_public_address_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", False)
    fake_dns(monkeypatch, "93.184.216.34")
    assert check_destination("https://hooks.example.com/done") == ["93.184.216.34"]


@pytest.mark.django_db
def test_https_is_sent_to_the_checked_address_with_the_original_name_for_tls(
    admin_user: Any, mock_requests: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", False)
    fake_dns(monkeypatch, "93.184.216.34")
    job = finished_job(admin_user, "https://hooks.example.com/done?k=v", output="text")
    deliver_first(job)

    [request] = mock_requests
    assert str(request.url) == "https://93.184.216.34/done?k=v"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert attempts(job)[0].delivered
