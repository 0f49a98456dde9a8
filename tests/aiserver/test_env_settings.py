from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from aiserver.env import env_bool, env_int, env_list, env_url, env_urls, stored_secret


def test_env_bool_reads_the_usual_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "Yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "off")
    assert env_bool("FLAG", True) is False


def test_env_bool_refuses_anything_else_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be true or false"):
        env_bool("FLAG", False)


def test_env_bool_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAG", raising=False)
    assert env_bool("FLAG", True) is True


def test_env_int_refuses_words_and_values_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNT", "two")
    with pytest.raises(ImproperlyConfigured, match="COUNT must be an integer"):
        env_int("COUNT", 1)
    monkeypatch.setenv("COUNT", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("COUNT", 1, minimum=1)
    monkeypatch.setenv("COUNT", "4")
    assert env_int("COUNT", 1, minimum=1) == 4


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTS", " a.example , ,b.example,")
    assert env_list("HOSTS") == ["a.example", "b.example"]


def test_env_urls_refuses_a_url_without_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_URLS", "http://gpu-1:11434/, gpu-2:11434")
    with pytest.raises(ImproperlyConfigured, match="OLLAMA_URLS must be a URL starting with http://"):
        env_urls("OLLAMA_URLS", {"http", "https"})


def test_env_urls_strips_trailing_slashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_URLS", "http://gpu-1:11434/,https://gpu-2")
    assert env_urls("OLLAMA_URLS", {"http", "https"}) == ["http://gpu-1:11434", "https://gpu-2"]


def test_env_url_refuses_the_wrong_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/db")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        env_url("DATABASE_URL", {"postgres", "sqlite"})


def test_stored_secret_is_created_once_and_then_reused(tmp_path) -> None:
    path = tmp_path / "nested" / "secret_key"
    first = stored_secret(path)
    assert len(first) >= 50
    assert stored_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
