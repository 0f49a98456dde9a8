"""The admin reads jobs, cancels and retries them, and issues API keys that are shown once."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext.models import ApiKey, CallbackAttempt, Job, State, StoredImage

pytestmark = pytest.mark.django_db

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a1d1e5a40000000049454e44ae426082"
)


@pytest.fixture
def signed_in(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


@pytest.fixture
def image(settings, tmp_path) -> StoredImage:
    settings.MEDIA_ROOT = tmp_path
    stored = StoredImage(
        sha256=hashlib.sha256(PNG).hexdigest(), content_type="image/png", width=1, height=1, size=len(PNG)
    )
    stored.file.save("upload", ContentFile(PNG))
    return stored


@pytest.fixture
def llava() -> Agent:
    agent = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url="http://gpu:11434")
    agent.mark_online(Discovery("0.12.0", [DiscoveredModel("llava:7b", Capability.VISION)]))
    return agent


def make_job(owner, state: str = State.QUEUED, **fields) -> Job:
    job = Job.objects.create(owner=owner, model="llava:7b", prompt="Describe this image.", **fields)
    Job.objects.filter(pk=job.pk).update(state=state)
    job.refresh_from_db()
    return job


def act(client: Client, url: str, action: str, *jobs: Job):
    data = {"action": action, "_selected_action": [job.pk for job in jobs]}
    return client.post(url, data, follow=True)


def test_the_job_list_shows_state_badges_and_filters(signed_in: Client, admin_user) -> None:
    make_job(admin_user, ref_id="first", tag="batch-7")
    make_job(admin_user, State.FAILED, ref_id="second")

    page = signed_in.get("/admin/imagetotext/job/").content.decode()

    assert ">Queued</span>" in page and ">Failed</span>" in page
    assert "batch-7" in page and "second" in page
    assert "By state" in page and "By model" in page


def test_jobs_cannot_be_added_by_hand(signed_in: Client) -> None:
    assert signed_in.get("/admin/imagetotext/job/add/").status_code == 403


def test_the_failed_jobs_list_shows_only_failed_jobs_with_their_error(signed_in: Client, admin_user) -> None:
    make_job(admin_user, ref_id="still-waiting")
    make_job(admin_user, State.FAILED, ref_id="broken", error="Ollama said no")

    response = signed_in.get("/admin/imagetotext/failedjob/")
    page = response.content.decode()

    assert response.status_code == 200
    assert "Failed jobs" in page
    assert "broken" in page and "Ollama said no" in page
    assert "still-waiting" not in page


def test_a_job_page_shows_image_output_timings_and_callbacks(signed_in: Client, admin_user, image: StoredImage) -> None:
    job = make_job(
        admin_user,
        State.COMPLETED,
        image=image,
        output="A tiny dot.",
        prompt_tokens=12,
        completion_tokens=34,
        reply_to="PUT tok-secret@https://client.example/hook",
    )
    CallbackAttempt.objects.create(job=job, number=1, status_code=502, error="Bad gateway")

    page = signed_in.get(f"/admin/imagetotext/job/{job.pk}/change/").content.decode()

    assert 'src="data:image/png;base64,' in page and "1×1 image/png" in page
    assert "A tiny dot." in page and "34" in page
    assert "Bad gateway" in page and "502" in page
    assert "PUT https://client.example/hook (with credentials)" in page and "tok-secret" not in page
    assert 'name="tag"' in page and 'name="output"' not in page


def test_the_tag_is_the_one_thing_that_can_be_edited(signed_in: Client, admin_user) -> None:
    job = make_job(admin_user, tag="old")
    data = {"tag": "new", "callback_attempts-TOTAL_FORMS": 0, "callback_attempts-INITIAL_FORMS": 0}

    response = signed_in.post(f"/admin/imagetotext/job/{job.pk}/change/", {**data, "model": "other"})

    job.refresh_from_db()
    assert response.status_code == 302
    assert (job.tag, job.model) == ("new", "llava:7b")


def test_cancel_cancels_a_queued_job_and_counts_the_finished_ones(signed_in: Client, admin_user) -> None:
    waiting = make_job(admin_user, ref_id="a")
    done = make_job(admin_user, State.COMPLETED, ref_id="b")

    response = act(signed_in, "/admin/imagetotext/job/", "cancel_jobs", waiting, done)

    waiting.refresh_from_db()
    done.refresh_from_db()
    assert "Cancelled 1 of 2 job(s). The others had already finished." in response.content.decode()
    assert (waiting.state, done.state) == (State.CANCELLED, State.COMPLETED)


def test_retry_queues_a_failed_job_again(signed_in: Client, admin_user, llava: Agent) -> None:
    job = make_job(admin_user, State.FAILED, error="Timed out", error_code="Timeout", attempts=3)

    response = act(signed_in, "/admin/imagetotext/failedjob/", "retry_jobs", job)

    job.refresh_from_db()
    assert "Queued 1 job(s) again." in response.content.decode()
    assert (job.state, job.error, job.attempts) == (State.QUEUED, "", 0)


def test_retry_says_why_when_the_model_is_gone(signed_in: Client, admin_user) -> None:
    job = make_job(admin_user, State.FAILED, error="Timed out")

    response = act(signed_in, "/admin/imagetotext/failedjob/", "retry_jobs", job)

    job.refresh_from_db()
    assert f"job {job.pk}: Model llava:7b not found" in response.content.decode()
    assert job.state == State.FAILED


def test_retry_leaves_a_running_job_alone(signed_in: Client, admin_user, llava: Agent) -> None:
    job = make_job(admin_user, State.STARTED, agent=llava)

    response = act(signed_in, "/admin/imagetotext/job/", "retry_jobs", job)

    job.refresh_from_db()
    assert "it is started, not finished" in response.content.decode()
    assert job.state == State.STARTED


def test_the_api_key_pages_render(signed_in: Client, admin_user) -> None:
    ApiKey.issue(admin_user, "ci", restrict_to=["ImageToText"])

    listing = signed_in.get("/admin/imagetotext/apikey/").content.decode()
    add = signed_in.get("/admin/imagetotext/apikey/add/")

    assert "ci" in listing and "ImageToText" in listing
    assert add.status_code == 200 and 'name="restrict_to"' in add.content.decode()


def test_adding_a_key_shows_it_once_and_stores_only_its_hash(signed_in: Client, admin_user) -> None:
    form = {"name": "laptop", "owner": admin_user.pk, "restrict_to": "ImageToText, QueueImageToText"}

    response = signed_in.post("/admin/imagetotext/apikey/add/", form, follow=True)
    page = response.content.decode()

    key = re.search(r"Copy it now: (ak-[\w-]+); it will not be shown again", page).group(1)
    row = ApiKey.objects.get()
    assert row.key_hash == ApiKey.hash(key) and key.startswith(row.prefix)
    assert row.restrict_to == ["ImageToText", "QueueImageToText"]
    assert key not in signed_in.get("/admin/imagetotext/apikey/").content.decode()
    detail = signed_in.get(f"/admin/imagetotext/apikey/{row.pk}/change/").content.decode()
    assert key not in detail and row.key_hash not in detail


def test_revoke_revokes_the_chosen_keys(signed_in: Client, admin_user) -> None:
    row, _ = ApiKey.issue(admin_user, "leaked")

    response = act(signed_in, "/admin/imagetotext/apikey/", "revoke", row)

    row.refresh_from_db()
    assert "Revoked 1 key(s)." in response.content.decode()
    assert row.revoked_at is not None and not row.usable


def test_the_image_list_is_read_only(signed_in: Client, image: StoredImage) -> None:
    page = signed_in.get("/admin/imagetotext/storedimage/").content.decode()

    assert image.sha256[:12] in page and "1×1" in page
    assert signed_in.get("/admin/imagetotext/storedimage/add/").status_code == 403
