"""Fake Ollama backends with a fixed generate latency, grouped by the figure that uses them.

Each group offers its own model, so the server sends a figure's jobs only to that figure's
agents. Every answered generate call is recorded with its prompt and the time.time() at which
the fake finished sending it: the bench and the fakes share one clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.base import RECORDED
from tests.fakes.ollama import FakeModel, FakeOllama

from .server import AgentSpec

# Forty words: a streamed answer of forty NDJSON lines.
STREAM_REPLY = " ".join(f"word{n}" for n in range(1, 41))


@dataclass(frozen=True)
class Call:
    """One answered /api/generate with a prompt: the prompt, when it arrived and when the answer was sent."""

    prompt: str
    started: float
    finished: float


class BenchOllama(FakeOllama):
    """FakeOllama whose latency applies to /api/generate only, so health checks stay instant."""

    def __init__(self, model: str, *, latency: float, chunk_delay: float = 0.0, reply: str = "") -> None:
        vision = FakeModel(model, vision=True, family="llama", parameter_size="7B", families=["llama", "clip"])
        super().__init__(models=[vision], replies={model: reply} if reply else None, chunk_delay=chunk_delay)
        self.generate_latency = latency
        self.calls: list[Call] = []
        self._serving: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None

    async def on_started(self) -> None:
        self._serving, self._released = asyncio.get_running_loop(), asyncio.Event()

    def release(self) -> None:
        """From now on answer at once, including the calls still waiting out their latency."""
        if self._serving is not None and self._released is not None:
            self._serving.call_soon_threadsafe(self._released.set)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        started = time.time()
        if self.generate_latency and self._released is not None:
            try:
                await asyncio.wait_for(self._released.wait(), self.generate_latency)
            except TimeoutError:
                pass  # the latency passed, as it normally does
        response = await super()._generate(request)
        recorded = request[RECORDED]
        prompt = str((recorded.json or {}).get("prompt") or "")
        # Thousands of calls: keep what we count, not the images.
        recorded.body, recorded.json, recorded.images = b"", None, []
        if response.status < 400 and prompt:  # a job's call, not a model load
            self.calls.append(Call(prompt, started, time.time()))
        return response


@dataclass
class Group:
    """The agents behind one figure: one model on `agents` fakes of the same concurrency and latency."""

    name: str
    model: str
    concurrency: int
    latency: float
    fakes: list[BenchOllama] = field(default_factory=list)
    direct_rate: float | None = None  # jobs/s the fakes gave direct callers, once measured

    @property
    def slots(self) -> int:
        return self.concurrency * len(self.fakes)

    @property
    def limit(self) -> float:
        """Jobs a second these agents can finish at most (their slots over their latency)."""
        return self.slots / self.latency if self.latency else float("inf")

    def answered(self) -> int:
        return sum(len(fake.calls) for fake in self.fakes)

    def calls(self) -> list[Call]:
        return [call for fake in self.fakes for call in fake.calls]

    def finished_between(self, start: float, end: float) -> int:
        return sum(1 for call in self.calls() if start <= call.finished < end)

    def release(self) -> None:
        for fake in self.fakes:
            fake.release()

    def set_latency(self, seconds: float) -> None:
        for fake in self.fakes:
            fake.generate_latency = seconds

    def agent_specs(self) -> list[AgentSpec]:
        return [
            AgentSpec(f"bench-{self.name}-{n:02}", fake.url, self.concurrency) for n, fake in enumerate(self.fakes, 1)
        ]


@dataclass(frozen=True)
class GroupSpec:
    name: str
    agents: int
    concurrency: int
    latency: float
    chunk_delay: float = 0.0
    reply: str = ""


GROUPS = (
    GroupSpec("latency", agents=1, concurrency=1, latency=0.1),  # figures 1, 2 and 6
    GroupSpec("stream", agents=1, concurrency=1, latency=0.1, chunk_delay=0.012, reply=STREAM_REPLY),  # 5
    GroupSpec("fast", agents=1, concurrency=16, latency=0.0),  # 9: the workers, not the agent, set the pace
    GroupSpec("throughput", agents=4, concurrency=2, latency=0.2),  # 3
    GroupSpec("wide", agents=32, concurrency=2, latency=1.0),  # 4
    GroupSpec("slow", agents=1, concurrency=1, latency=600.0),  # 8: jobs wait, intake is what counts
)


@contextmanager
def backends() -> Iterator[dict[str, Group]]:
    """Every group's fakes, started; stopped at the end."""
    with ExitStack() as stack:
        groups = {}
        for spec in GROUPS:
            group = Group(spec.name, f"bench-{spec.name}:7b", spec.concurrency, spec.latency)
            for _ in range(spec.agents):
                fake = BenchOllama(group.model, latency=spec.latency, chunk_delay=spec.chunk_delay, reply=spec.reply)
                group.fakes.append(stack.enter_context(fake))
            groups[spec.name] = group
        yield groups
