"""imagetotext.rows: instances from statements written once are the instances the ORM makes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.utils import timezone

from agents.models import Agent
from imagetotext import rows
from imagetotext.api.auth import key_for
from imagetotext.models import ApiKey, Job, State, StoredImage, jobs_with_agent_and_image

pytestmark = pytest.mark.django_db


def fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.fixture
def job(api_user, image, ollama_agent) -> Job:
    made = Job.objects.create(
        owner=api_user,
        image=image,
        model="llava:7b",
        agent=ollama_agent,
        options={"temperature": 0.2, "stop": ["\n"]},
        tried_agents=[ollama_agent.pk],
    )
    made.move_to(State.STARTED, attempts=1, lease_until=timezone.now() + timedelta(seconds=30))
    return made


def test_every_field_reads_as_the_orm_reads_it(job: Job) -> None:
    sql = f"SELECT {rows.columns(Job)} FROM {Job._meta.db_table} WHERE id = %s"

    read = rows.fetch_one(Job, sql, [job.pk])

    assert read is not None and fields(read) == fields(Job.objects.get(pk=job.pk))
    # Converted, not the driver's raw values: aware datetimes, decoded JSON.
    assert read.started_at is not None and read.started_at.tzinfo is not None
    assert read.options == {"temperature": 0.2, "stop": ["\n"]} and read.tried_agents == [job.agent_id]
    assert not read._state.adding and read._state.db == "default"


def test_a_join_reads_each_model_and_none_where_the_outer_join_found_nothing(job: Job, api_user) -> None:
    waiting = Job.objects.create(owner=api_user, model="llava:7b")  # no image, no agent

    ran, queued = jobs_with_agent_and_image([waiting.pk, job.pk])

    assert (ran.pk, queued.pk) == (job.pk, waiting.pk)  # oldest first
    assert fields(ran.agent) == fields(Agent.objects.get(pk=job.agent_id))
    assert fields(ran.image) == fields(StoredImage.objects.get(pk=job.image_id))
    assert ran.agent.online is True and ran.image.file.name == job.image.file.name
    assert queued.agent is None and queued.image is None


def test_the_job_to_run_costs_one_statement_and_its_relations_none(job: Job, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        (read,) = jobs_with_agent_and_image([job.pk])
        assert (read.agent.name, read.image.sha256) == (job.agent.name, job.image.sha256)


def test_an_api_key_and_its_owner_come_in_one_statement(api_user, api_key: str, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        found = key_for(api_key)
        assert found is not None and fields(found.owner) == fields(api_user)
    assert fields(found) == fields(ApiKey.objects.get(owner=api_user))
    assert key_for(api_key + "x") is None


def test_a_plan_is_made_once_per_connection(job: Job) -> None:
    sql = f"SELECT {rows.columns(Job)} FROM {Job._meta.db_table} WHERE id = %s"
    rows.fetch_one(Job, sql, [job.pk])
    plans = connections["default"].__dict__["_imagetotext_row_plans"]
    first = plans[(Job,)]

    rows.fetch_one(Job, sql, [job.pk])

    assert plans[(Job,)] is first
    user = get_user_model()
    assert rows.fetch_one(user, f"SELECT {rows.columns(user)} FROM {user._meta.db_table} WHERE id = 0", []) is None


def test_an_inserted_job_reads_back_as_it_was_made(api_user, image, ollama_agent) -> None:
    job = Job(
        owner=api_user,
        image=image,
        model="llava:7b",
        agent=ollama_agent,
        prompt="Describe\nit",
        options={"num_ctx": 4096},
        messages=[{"role": "user", "content": "hi", "images": [0]}],
    )

    assert rows.insert(job) is True

    assert job.pk is not None and not job._state.adding
    assert fields(Job.objects.get(pk=job.pk)) == fields(job)
    assert Job.objects.get(pk=job.pk).options == {"num_ctx": 4096}


def test_an_auto_now_add_field_is_filled_in(png_bytes: bytes) -> None:
    image = StoredImage(sha256="a" * 64, file="images/x.png", content_type="image/png", width=1, height=1, size=3)

    assert rows.insert(image) is True

    assert image.created_at is not None
    assert StoredImage.objects.get(pk=image.pk).created_at == image.created_at


def test_a_conflict_inserts_nothing_and_leaves_the_transaction_usable(image: StoredImage) -> None:
    again = StoredImage(sha256=image.sha256, file="images/y.png", content_type="image/png", width=1, height=1, size=3)

    with transaction.atomic():
        assert rows.insert(again, on_conflict="sha256") is False
        assert again.pk is None
        assert (
            StoredImage.objects.filter(sha256=image.sha256).count() == 1
        )  # PostgreSQL would refuse this after an error
