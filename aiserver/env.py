"""Typed readers for settings that come from the environment.

Each helper fails loudly with ImproperlyConfigured on a value it cannot read,
so a typo in a deployment stops the process instead of being silently ignored.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """The variable's value, or default when unset or empty."""
    return os.environ.get(name, "").strip() or default


def parse_bool(value: str) -> bool | None:
    """True or False for 1/0, true/false, yes/no or on/off in any case; None for anything else.

    The API reads booleans (?Vision=true) with the same words, so this is their one home.
    """
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    return None


def env_bool(name: str, default: bool) -> bool:
    """A boolean written as 1/0, true/false, yes/no or on/off."""
    raw = env_str(name)
    if not raw:
        return default
    value = parse_bool(raw)
    if value is None:
        raise ImproperlyConfigured(f"{name} must be true or false, not {raw.lower()!r}")
    return value


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """An integer, optionally no smaller than minimum."""
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """A comma-separated list; blank items are dropped."""
    raw = env_str(name)
    if not raw:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, schemes: set[str], default: str = "") -> str:
    """A URL whose scheme is one of schemes and which names a host."""
    raw = env_str(name, default)
    if raw:
        check_url(name, raw, schemes)
    return raw


def env_urls(name: str, schemes: set[str]) -> list[str]:
    """A comma-separated list of URLs, each checked like env_url."""
    urls = env_list(name)
    for url in urls:
        check_url(name, url, schemes)
    return [url.rstrip("/") for url in urls]


def check_url(name: str, url: str, schemes: set[str]) -> None:
    parts = urlsplit(url)
    # sqlite:////abs/path names a file, not a host.
    needs_host = parts.scheme != "sqlite"
    if parts.scheme not in schemes or (needs_host and not parts.hostname):
        allowed = ", ".join(sorted(f"{s}://" for s in schemes))
        raise ImproperlyConfigured(f"{name} must be a URL starting with {allowed}: {url!r}")


def stored_secret(path: Path) -> str:
    """A secret kept in a file, created with a fresh random value on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(50))
        draft.chmod(0o600)
        try:
            # link() is atomic and refuses to overwrite: when the web and worker
            # processes start together, exactly one secret wins and both read it.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
