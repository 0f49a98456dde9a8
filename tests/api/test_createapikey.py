"""manage.py createapikey prints only the key, so KEY=$(manage.py createapikey ci) works."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from imagetotext.models import ApiKey

pytestmark = pytest.mark.django_db


def create(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("createapikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_prints_only_the_key_and_stores_its_hash(admin_user) -> None:
    out, err = create("ci")

    key = out.removesuffix("\n")
    assert out == key + "\n" and key.startswith("ak-") and "\n" not in key
    row = ApiKey.objects.get(key_hash=ApiKey.hash(key))
    assert (row.name, row.owner, row.restrict_to, row.expires_at) == ("ci", admin_user, [], None)
    assert row.prefix in err and key not in err


def test_it_sets_owner_restrictions_and_expiry(admin_user, django_user_model) -> None:
    alice = django_user_model.objects.create_user("alice")

    out, _ = create(
        "batch", "--owner", "alice", "--expires-in-days", "30", "--restrict-to", "ImageToText, QueueImageToText"
    )

    row = ApiKey.objects.get(key_hash=ApiKey.hash(out.strip()))
    assert row.owner == alice
    assert row.restrict_to == ["ImageToText", "QueueImageToText"]
    assert abs(row.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)


def test_the_only_superuser_owns_the_key_by_default(django_user_model) -> None:
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")

    out, _ = create("ci")

    assert ApiKey.objects.get(key_hash=ApiKey.hash(out.strip())).owner == root


def test_the_user_named_admin_settles_several_superusers(admin_user, django_user_model) -> None:
    django_user_model.objects.create_superuser("root", "root@example.com", "pw")

    out, _ = create("ci")

    assert ApiKey.objects.get(key_hash=ApiKey.hash(out.strip())).owner == admin_user


def test_it_refuses_an_unknown_owner(admin_user) -> None:
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        create("ci", "--owner", "nobody")
    assert not ApiKey.objects.exists()


def test_it_asks_for_an_owner_when_there_is_no_superuser() -> None:
    with pytest.raises(CommandError, match="No superuser"):
        create("ci")


def test_it_asks_for_an_owner_when_several_superusers_could_own_it(django_user_model) -> None:
    django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    django_user_model.objects.create_superuser("ops", "ops@example.com", "pw")

    with pytest.raises(CommandError, match=r"Several superusers \(ops, root\)"):
        create("ci")


def test_it_refuses_a_nonsense_expiry_or_api_name(admin_user) -> None:
    with pytest.raises(CommandError, match="positive"):
        create("ci", "--expires-in-days", "0")
    with pytest.raises(CommandError, match="Not an API name: Image To Text"):
        create("ci", "--restrict-to", "Image To Text")
    assert not ApiKey.objects.exists()
