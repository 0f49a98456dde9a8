"""pytest fixtures that run the fake servers; import with `from tests.fakes.fixtures import *`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.ollama import FakeOllama

__all__ = ["fake_comfyui", "fake_ollama"]


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A running FakeOllama with the default models, stopped after the test."""
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def fake_comfyui() -> Iterator[FakeComfyUI]:
    """A running FakeComfyUI with Florence-2 installed, stopped after the test."""
    with FakeComfyUI() as fake:
        yield fake
