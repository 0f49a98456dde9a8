"""compose.yaml: the services it promises, and only variables the settings read."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)


def variables_settings_reads() -> set[str]:
    """Every name aiserver/settings.py reads: env_str("X"), env_int("X", ...), ..., os.environ.get("X"), os.environ["X"]."""
    tree = ast.parse((BASE_DIR / "aiserver" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and is_text(node.args[0]) and reads_environment(node.func):
            names.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and names_environ(node.value) and is_text(node.slice):
            names.add(node.slice.value)
    return names


def reads_environment(func: ast.AST) -> bool:
    """One of aiserver.env's readers (env_str, env_int, ...), os.environ.get or os.getenv."""
    if isinstance(func, ast.Name):
        return func.id.startswith("env_")
    return isinstance(func, ast.Attribute) and func.attr in {"get", "getenv"} and names_environ(func.value)


def is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def names_environ(node: ast.AST) -> bool:
    """os.environ, or os itself (os.getenv)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "os"


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((BASE_DIR / "compose.yaml").read_text())


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this server's image (built from the Dockerfile)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def test_the_settings_parser_finds_the_variables_it_should() -> None:
    found = variables_settings_reads()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LOG_FORMAT", "RETENTION_DAYS"} <= found
    assert not any(name.startswith("env_") for name in found)


def test_every_variable_the_app_services_set_is_one_the_settings_read(compose) -> None:
    read = variables_settings_reads()
    services = app_services(compose)
    assert services, "no service builds the Dockerfile"
    for name, service in services.items():
        unknown = set(environment(service)) - read
        assert not unknown, f"{name} sets {sorted(unknown)}, which aiserver/settings.py does not read"


def test_web_worker_postgres_and_redis_run_and_ollama_is_optional(compose) -> None:
    services = compose["services"]
    assert {"web", "worker", "postgres", "redis", "ollama"} <= set(services)
    assert {"web", "worker"} <= set(app_services(compose))
    assert services["ollama"]["profiles"] == ["ollama"]
    for name in ("web", "worker", "postgres", "redis"):
        assert "profiles" not in services[name], f"{name} should start without a profile"
    assert "qcluster" in services["worker"]["command"]
    assert "aiserver.asgi:application" in services["web"]["command"]


def test_the_app_services_use_postgres_and_redis_and_share_one_data_volume(compose) -> None:
    for name, service in app_services(compose).items():
        env = environment(service)
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["REDIS_URL"].startswith("redis://redis:"), name
        assert f"data:{env['DATA_DIR']}" in service["volumes"], name


def test_every_dependency_and_named_volume_is_declared(compose) -> None:
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on") or []
        assert set(depends) <= set(services), f"{name} depends on a service that is not there"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in volumes, f"{name} mounts an undeclared volume {source}"


def test_the_image_builds_from_requirements_txt(compose) -> None:
    for service in app_services(compose).values():
        context = BASE_DIR / (service["build"] if isinstance(service["build"], str) else service["build"]["context"])
        dockerfile = (context / "Dockerfile").read_text()
        assert "requirements.txt" in dockerfile and (context / "requirements.txt").is_file()
