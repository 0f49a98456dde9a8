"""The figures measured against a running server: each returns the rows it prints as.

All timing is from the client side of the HTTP API and the WebSocket; "direct" figures time
the same fake backend called straight from the same httpx client, in the same run.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import connect
from websockets.typing import Origin

from .browser import Browser, SignInFailed
from .fakes import Group
from .media import small_png, unique_jpeg
from .report import Row, added_ms, ms, not_reached, p50, p95, verdict
from .server import Memory, Server

PROMPT = "Describe this image."
CARD = re.compile(r'<article id="job-(\d+)"[^>]*?data-state="(\w+)"')
# QueueImageToText intake (requests/s) measured before this benchmark existed; figure 8 asks for twice that.
TODAY_INTAKE = {"embedded": 51.0, "scaleout": 39.0}
_uploads = itertools.count(1)


class BenchError(Exception):
    """The server answered something a figure cannot use."""


@dataclass(frozen=True)
class Photo:
    """An upload, and the image the server would send a 1024 px backend for it (imagetotext.images.prepare)."""

    label: str
    data: bytes
    prepared: bytes


@dataclass(frozen=True)
class Sizes:
    """How many samples and seconds each figure takes (full run or --quick)."""

    latency: int  # sequential calls per latency figure (1 MP)
    large: int  # calls with the 12 MP photo
    direct: int  # direct calls to the fake, for each baseline
    stream: int  # streamed generations
    cards: int  # jobs watched over the WebSocket
    window: float  # seconds of steady throughput counted
    jobs: int  # jobs between the two memory readings
    intake: float  # seconds of QueueImageToText intake counted


FULL = Sizes(latency=40, large=10, direct=8, stream=8, cards=25, window=6, jobs=500, intake=4)
QUICK = Sizes(latency=12, large=5, direct=6, stream=4, cards=10, window=4, jobs=100, intake=3)


@dataclass
class Bench:
    """One running server, its API key, the fakes behind it and the client that talks to both."""

    config: str  # "embedded" or "scaleout"
    server: Server
    key: str
    http: httpx.AsyncClient
    groups: dict[str, Group]
    photos: dict[str, Photo]
    sizes: Sizes

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def api(self, path: str) -> str:
        return f"{self.server.url}/api/{path}"


@dataclass(frozen=True)
class Figure:
    """A measurement: its number, its name and target for when it cannot be reached, a hard time limit,
    the groups of fakes whose agents it needs, and whether those agents are removed after it."""

    number: int
    title: str
    target: str
    measure: Callable[[Bench], Awaitable[list[Row]]]
    timeout: float
    uses: tuple[str, ...] = ()
    remove_after: bool = False


async def run_figure(bench: Bench, figure: Figure) -> list[Row]:
    """The figure's rows, or one "not reached" row if it timed out or the server misbehaved."""
    try:
        return await asyncio.wait_for(figure.measure(bench), figure.timeout)
    except TimeoutError:
        return [not_reached(figure.number, figure.title, figure.target, f"timeout after {figure.timeout:g} s")]
    except (BenchError, SignInFailed, httpx.HTTPError, websockets.WebSocketException, OSError) as error:
        reason = " ".join(str(error).split())[:90] or type(error).__name__
        return [not_reached(figure.number, figure.title, figure.target, reason)]
    except Exception as error:  # noqa: BLE001 - a bug in one figure must not cost the others
        traceback.print_exc()
        return [not_reached(figure.number, figure.title, figure.target, f"{type(error).__name__}: {error}"[:90])]


# --- talking to the server and to the fakes ----------------------------------------------------------


def checked(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 200; else BenchError with the status and the server's message."""
    if response.status_code != 200:
        raise BenchError(f"{response.request.url.path} answered {response.status_code}: {error_message(response)}")
    return response.json()


def error_message(response: httpx.Response) -> str:
    """AI Server's responseStatus.message (or Ollama's error) if the body has one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:150]
    if isinstance(body, dict):
        status = body.get("responseStatus")
        message = status.get("message") if isinstance(status, dict) else body.get("error")
        if message:
            return str(message)[:150]
    return response.text[:150]


async def image_to_text(bench: Bench, model: str, image: bytes) -> float:
    """POST /api/ImageToText (multipart) and wait for the text; returns the seconds it took."""
    files = {"image": ("photo.jpg", image, "image/jpeg")}
    started = time.perf_counter()
    response = await bench.http.post(bench.api("ImageToText"), files=files, data={"Model": model}, headers=bench.auth)
    seconds = time.perf_counter() - started
    if not checked(response).get("results"):
        raise BenchError(f"ImageToText gave no results: {response.text[:150]}")
    return seconds


async def queue_job(bench: Bench, model: str, prompt: str = "") -> int:
    """POST /api/QueueImageToText with a fresh 64 px PNG; returns the job id."""
    files = {"image": ("small.png", small_png(), "image/png")}
    fields = {"Model": model} | ({"Prompt": prompt} if prompt else {})
    response = await bench.http.post(bench.api("QueueImageToText"), files=files, data=fields, headers=bench.auth)
    return int(checked(response)["jobId"])


def generate_body(model: str, image: bytes, stream: bool) -> dict[str, Any]:
    return {"model": model, "prompt": PROMPT, "images": [base64.b64encode(image).decode()], "stream": stream}


async def timed_post(http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = await http.post(url, json=body, headers=headers)
    seconds = time.perf_counter() - started
    checked(response)
    return seconds


async def direct_generate(bench: Bench, group: Group, image: bytes, samples: int) -> list[float]:
    """Seconds of `samples` stream:false generate calls straight to the group's fake."""
    body = generate_body(group.model, image, stream=False)
    url = group.fakes[0].url + "/api/generate"
    return [await timed_post(bench.http, url, body, {}) for _ in range(samples)]


async def streamed(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, int]:
    """A streamed generate: seconds to the first line with text, and how many NDJSON lines came."""
    started, first, lines = time.perf_counter(), 0.0, 0
    async with http.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            checked(response)
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            lines += 1
            chunk = json.loads(line)
            if "error" in chunk:
                raise BenchError(f"the stream ended with an error: {chunk['error']}")
            if not first and chunk.get("response"):
                first = time.perf_counter() - started
    if not first:
        raise BenchError(f"{url} streamed {lines} lines without any text")
    return first, lines


def latency_rows(number: int, label: str, server: list[float], direct: list[float], target: float) -> list[Row]:
    """Added p50 and p95 (server minus direct) beside the p50 target and the p95 <= 2 x p50 target."""
    added50, added95 = p50(server) - p50(direct), p95(server) - p95(direct)
    ratio = f"{p50(server) / p50(direct):.2f}× direct"
    return [
        Row(
            number,
            f"{label}: added p50",
            f"{added_ms(added50)} (p50 {ms(p50(server))})",
            f"p50 {ms(p50(direct))}",
            f"≤ {target * 1000:.0f} ms added",
            verdict(added50 <= target, ratio),
        ),
        Row(
            number,
            f"{label}: added p95",
            f"{added_ms(added95)} (p95 {ms(p95(server))})",
            f"p95 {ms(p95(direct))}",
            f"≤ 2 × added p50 ({2 * added50 * 1000:.0f} ms)",
            verdict(added95 <= 2 * added50, f"{p95(server) / p95(direct):.2f}× direct"),
        ),
    ]


# --- figures 1 and 2: added latency of the waiting calls ----------------------------------------------


async def image_to_text_latency(bench: Bench) -> list[Row]:
    """Figure 1: time POST /api/ImageToText adds to a 100 ms backend, for a 1 MP and a 12 MP JPEG."""
    group, rows = bench.groups["latency"], []
    for photo, samples, target in (
        (bench.photos["1mp"], bench.sizes.latency, 0.010),
        (bench.photos["12mp"], bench.sizes.large, 0.040),
    ):
        direct = await direct_generate(bench, group, photo.prepared, bench.sizes.direct)
        for _ in range(2):  # warm-up: the first jobs after a start pay for imports and connections
            await image_to_text(bench, group.model, unique_jpeg(photo.data, next(_uploads)))
        server = [
            await image_to_text(bench, group.model, unique_jpeg(photo.data, next(_uploads))) for _ in range(samples)
        ]
        rows += latency_rows(1, f"1 ImageToText, {photo.label}", server, direct, target)
    return rows


async def generate_latency(bench: Bench) -> list[Row]:
    """Figure 2: time POST /api/generate (stream: false) adds to a 100 ms backend, 1 MP JPEG."""
    group, photo = bench.groups["latency"], bench.photos["1mp"]
    direct = await direct_generate(bench, group, photo.prepared, bench.sizes.direct)
    server = []
    for n in range(bench.sizes.latency + 2):
        body = generate_body(group.model, unique_jpeg(photo.data, next(_uploads)), stream=False)
        seconds = await timed_post(bench.http, bench.api("generate"), body, bench.auth)
        if n >= 2:  # two warm-up calls
            server.append(seconds)
    return latency_rows(2, f"2 /api/generate stream:false, {photo.label}", server, direct, 0.010)


# --- figure 5: streaming ------------------------------------------------------------------------------


async def streaming(bench: Bench) -> list[Row]:
    """Figure 5: time to first token added by /api/generate (stream: true), and NDJSON lines relayed."""
    group, photo = bench.groups["stream"], bench.photos["1mp"]
    target = 0.060 if bench.config == "embedded" else 0.015
    direct_body = generate_body(group.model, photo.prepared, stream=True)
    direct = [
        await streamed(bench.http, group.fakes[0].url + "/api/generate", direct_body, {})
        for _ in range(max(3, bench.sizes.stream // 2))
    ]
    server = []
    for n in range(bench.sizes.stream + 1):
        body = generate_body(group.model, unique_jpeg(photo.data, next(_uploads)), stream=True)
        result = await streamed(bench.http, bench.api("generate"), body, bench.auth)
        if n >= 1:  # one warm-up
            server.append(result)
    ttft, direct_ttft = [s[0] for s in server], [d[0] for d in direct]
    added = p50(ttft) - p50(direct_ttft)
    got, sent = int(p50([float(s[1]) for s in server])), int(p50([float(d[1]) for d in direct]))
    return [
        Row(
            5,
            "5 /api/generate stream:true: first token added p50",
            f"{added_ms(added)} (p50 {ms(p50(ttft))})",
            f"p50 {ms(p50(direct_ttft))}",
            f"≤ {target * 1000:.0f} ms added",
            verdict(added <= target, f"{p50(ttft) / p50(direct_ttft):.2f}× direct"),
        ),
        Row(
            5,
            "5 /api/generate stream:true: lines relayed (median)",
            f"{got} of {sent} lines",
            f"{sent} lines",
            "every chunk its own line",
            verdict(got >= sent, f"{got / sent:.0%} of lines"),
        ),
    ]


# --- figure 6: worker to WebSocket --------------------------------------------------------------------


async def read_cards(socket: Any, completed: dict[int, float]) -> None:
    """Note when each job's card first arrives with data-state="Completed"."""
    async for message in socket:
        arrived = time.time()
        for match in CARD.finditer(message if isinstance(message, str) else message.decode()):
            if match.group(2) == "Completed":
                completed.setdefault(int(match.group(1)), arrived)


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {seconds:g} s")
        await asyncio.sleep(0.005)


def answered(group: Group, prompt: str) -> float | None:
    """When the group's fake finished answering this prompt, if it has."""
    return next((call.finished for call in group.calls() if call.prompt == prompt), None)


async def card_latency(bench: Bench) -> list[Row]:
    """Figure 6: from the fake sending its last byte to the WebSocket delivering the Completed card, p95."""
    group, target = bench.groups["latency"], 0.100 if bench.config == "embedded" else 0.015
    async with Browser(bench.server) as browser:
        cookies = browser.cookie_header
    completed: dict[int, float] = {}
    delays = []
    url = bench.server.url.replace("http://", "ws://") + "/ws/jobs/"
    async with connect(
        url,
        origin=Origin(bench.server.url),
        additional_headers={"Cookie": cookies},
        max_size=None,
        proxy=None,
        compression=None,
    ) as socket:
        reader = asyncio.create_task(read_cards(socket, completed))
        try:
            await asyncio.sleep(0.5)  # the cards a connecting page gets first
            for n in range(bench.sizes.cards + 2):
                prompt = f"{PROMPT} [card {uuid.uuid4().hex}]"
                job = await queue_job(bench, group.model, prompt)
                await until(lambda job=job: job in completed, 15, f"the Completed card of job {job}")
                await until(lambda prompt=prompt: answered(group, prompt) is not None, 2, f"the answer to job {job}")
                if n >= 2:  # two warm-up jobs
                    delays.append(completed[job] - answered(group, prompt))
        finally:
            reader.cancel()
    return [
        Row(
            6,
            "6 worker → WebSocket card: p95 (p50)",
            f"{ms(p95(delays))} ({ms(p50(delays))})",
            "-",
            f"p95 ≤ {target * 1000:.0f} ms",
            verdict(p95(delays) <= target, f"{p95(delays) / target:.2f}× target"),
        )
    ]


# --- figures 3, 4 and 9: throughput and memory under load -------------------------------------------


@dataclass
class Load:
    """What a run of queued jobs did: how many were accepted, refused, and the last refusal."""

    submitted: int = 0
    refused: int = 0
    last_error: str = ""
    lost: int = 0  # accepted, but never sent to a backend
    started: float = field(default_factory=time.time)

    def note(self) -> str:
        """What went wrong, for the measured column; "" when nothing did."""
        notes = [f"{self.refused} refused ({' '.join(self.last_error.split())[:100]})"] if self.refused else []
        notes += [f"{self.lost} accepted but never run"] if self.lost else []
        return "; " + ", ".join(notes) if notes else ""


async def keep_queue_full(
    bench: Bench, group: Group, backlog: int, seconds: float = 0, total: int = 0, clients: int = 8
) -> Load:
    """Submit jobs from `clients` concurrent clients, keeping `backlog` not yet answered by the fakes,
    for `seconds` or until `total` were submitted."""
    load, answered_before = Load(), group.answered()
    stop_at = time.time() + seconds if seconds else float("inf")

    async def client() -> None:
        while time.time() < stop_at and not (total and load.submitted >= total):
            if load.submitted - (group.answered() - answered_before) >= backlog:
                await asyncio.sleep(0.005)
                continue
            load.submitted += 1
            try:
                await queue_job(bench, group.model)
            except (BenchError, httpx.HTTPError) as error:
                load.submitted, load.refused, load.last_error = load.submitted - 1, load.refused + 1, str(error)
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client() for _ in range(clients)))
    return load


async def drain(group: Group, load: Load, answered_before: int, seconds: float = 90, stall: float = 5) -> None:
    """Let the server finish what is queued, the fakes answering at once so it does not take long.

    Jobs the server never hands to a fake (nothing answered for `stall` seconds) count as lost.
    """
    latency, deadline = group.latency, time.monotonic() + seconds
    last, progressed = -1, time.monotonic()
    group.set_latency(0.0)
    try:
        while (answered := group.answered() - answered_before) < load.submitted:
            if answered != last:
                last, progressed = answered, time.monotonic()
            if time.monotonic() - progressed > stall or time.monotonic() > deadline:
                load.lost = load.submitted - answered
                return
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the last answers are being saved
    finally:
        group.set_latency(latency)


async def direct_throughput(bench: Bench, group: Group, seconds: float) -> float:
    """Jobs a second the group's fakes finish when called straight, every slot kept busy.

    The lanes start spread over one latency, as a steady queue's jobs would be, so the client
    does not have to handle every answer in the same instant.
    """
    lanes = [fake.url for fake in group.fakes for _ in range(group.concurrency)]
    bodies = {url: generate_body(group.model, small_png(), stream=False) for url in set(lanes)}
    warm = 2 * group.latency
    start = time.time()

    async def lane(number: int, url: str) -> None:
        await asyncio.sleep(group.latency * number / len(lanes))
        while time.time() < start + warm + seconds:
            checked(await bench.http.post(url + "/api/generate", json=bodies[url]))

    await asyncio.gather(*(lane(number, url) for number, url in enumerate(lanes)))
    return group.finished_between(start + warm, start + warm + seconds) / seconds


async def server_throughput(
    bench: Bench, group: Group, sample: Callable[[], Awaitable[None]] | None = None
) -> tuple[float, Load]:
    """Jobs a second the server gets through the group's agents with the queue kept full (steady window)."""
    warm, window = max(2.0, 3 * group.latency), bench.sizes.window
    answered_before = group.answered()
    backlog = group.slots + max(8, group.slots // 4)
    sampler = asyncio.create_task(repeat(sample)) if sample else None
    try:
        load = await keep_queue_full(bench, group, backlog, seconds=warm + window)
    finally:
        if sampler:
            sampler.cancel()
    rate = group.finished_between(load.started + warm, load.started + warm + window) / window
    await drain(group, load, answered_before)
    return rate, load


async def repeat(action: Callable[[], Awaitable[None]], every: float = 0.5) -> None:
    while True:
        await action()
        await asyncio.sleep(every)


def throughput_row(
    number: int, label: str, rate: float, direct: float, group: Group, load: Load, share: float | None
) -> Row:
    target = f"≥ {share:.0%} of limit ({share * group.limit:.1f} jobs/s)" if share else "no target"
    ratio = f"{rate / group.limit:.0%} of limit, {rate / direct:.2f}× direct"
    return Row(
        number,
        label,
        f"{rate:.1f} jobs/s{load.note()}",
        f"{direct:.1f} jobs/s (limit {group.limit:.0f})",
        target,
        verdict(rate >= share * group.limit, ratio) if share else ratio,
    )


def throughput_figure(workers: str) -> Callable[[Bench], Awaitable[list[Row]]]:
    async def measure(bench: Bench) -> list[Row]:
        """Figure 3: 4 agents × concurrency 2 × 200 ms (limit 40 jobs/s), queue kept full."""
        group = bench.groups["throughput"]
        if group.direct_rate is None:  # the same fakes for both runs: measured once
            group.direct_rate = await direct_throughput(bench, group, 3.0)
        direct = group.direct_rate
        rate, load = await server_throughput(bench, group)
        share = 0.95 if workers == "default" else None
        label = f"3 throughput 4 agents×2×200 ms, WORKERS={workers}"
        return [throughput_row(3, label, rate, direct, group, load, share)]

    return measure


async def wide_throughput(bench: Bench) -> list[Row]:
    """Figure 4: 32 agents × concurrency 2 × 1 s (limit 64 jobs/s), and the cluster's memory meanwhile."""
    group, peak = bench.groups["wide"], Memory(0.0, 0.0, 0, 0.0)

    async def sample() -> None:
        nonlocal peak
        memory = await asyncio.to_thread(bench.server.memory)
        peak = max(peak, memory, key=lambda reading: reading.workers_pss_mb)

    direct = await direct_throughput(bench, group, 3.0)
    rate, load = await server_throughput(bench, group, sample)
    return [
        throughput_row(4, "4 throughput 32 agents×2×1 s, WORKERS default", rate, direct, group, load, 0.90),
        Row(
            4,
            "4 qcluster tree memory in that run (PSS sum, peak)",
            f"{peak.workers_pss_mb:.0f} MB in {peak.worker_processes} processes (VmRSS sum {peak.workers_mb:.0f} MB)",
            "-",
            "≤ 400 MB",
            verdict(peak.workers_pss_mb <= 400, f"{peak.workers_pss_mb / 400:.2f}× target"),
        ),
    ]


async def memory_over_jobs(bench: Bench) -> list[Row]:
    """Figure 9: VmRSS of daphne and of the qcluster tree before and after many jobs on an instant backend."""
    group, jobs = bench.groups["fast"], bench.sizes.jobs
    before = await asyncio.to_thread(bench.server.memory)
    answered_before, started = group.answered(), time.monotonic()
    load = await keep_queue_full(bench, group, backlog=group.slots + 8, total=jobs)
    await drain(group, load, answered_before, seconds=300)
    took = time.monotonic() - started
    await asyncio.sleep(1.0)
    after = await asyncio.to_thread(bench.server.memory)
    web, workers = after.web_mb / before.web_mb - 1, after.workers_mb / before.workers_mb - 1
    return [
        Row(
            9,
            f"9 web (daphne) memory over {load.submitted} jobs in {took:.0f} s",
            f"{before.web_mb:.0f} → {after.web_mb:.0f} MB{load.note()}",
            "-",
            "flat (growth ≤ 20 %)",
            verdict(web <= 0.20, f"{web:+.0%}"),
        ),
        Row(
            9,
            f"9 qcluster tree memory ({after.worker_processes} processes)",
            f"{before.workers_mb:.0f} → {after.workers_mb:.0f} MB",
            "-",
            "flat (growth ≤ 20 %)",
            verdict(workers <= 0.20, f"{workers:+.0%}"),
        ),
    ]


# --- figure 8: intake ---------------------------------------------------------------------------------


async def intake(bench: Bench) -> list[Row]:
    """Figure 8: QueueImageToText requests a second from 8 concurrent clients (64 px PNGs, a backend that never answers in time)."""
    group, warm, window = bench.groups["slow"], 1.0, bench.sizes.intake
    start = time.time()
    answered: list[float] = []

    async def client() -> None:
        while time.time() < start + warm + window:
            await queue_job(bench, group.model)
            answered.append(time.time())

    await asyncio.gather(*(client() for _ in range(8)))
    group.release()  # the queue left behind runs through at once, so serve stops quickly
    rate = sum(1 for t in answered if start + warm <= t < start + warm + window) / window
    today = TODAY_INTAKE[bench.config]
    return [
        Row(
            8,
            "8 QueueImageToText intake, 8 clients",
            f"{rate:.0f} req/s",
            "-",
            f"≥ {2 * today:.0f} req/s (2 × today's {today:.0f})",
            verdict(rate >= 2 * today, f"{rate / today:.2f}× today"),
        )
    ]


def figures(config: str) -> list[Figure]:
    """The figures of the server with default settings, in the order they run.

    Agents are registered just before the first figure that needs them, so each figure runs with
    about as many agents as it uses; the 32 of figure 4 are removed after it. Intake runs last:
    it leaves a queue behind.
    """
    cards = "p95 ≤ 100 ms" if config == "embedded" else "p95 ≤ 15 ms"
    first_token = "≤ 60 ms added" if config == "embedded" else "≤ 15 ms added"
    return [
        Figure(
            1,
            "1 ImageToText added latency (1 MP, 12 MP)",
            "≤ 10 ms / ≤ 40 ms added",
            image_to_text_latency,
            150,
            uses=("latency",),
        ),
        Figure(
            2, "2 /api/generate stream:false added latency", "≤ 10 ms added", generate_latency, 90, uses=("latency",)
        ),
        Figure(5, "5 /api/generate streaming first token", first_token, streaming, 90, uses=("stream",)),
        Figure(6, "6 worker → WebSocket card", cards, card_latency, 90, uses=("latency",)),
        Figure(9, "9 memory over many jobs", "flat (growth ≤ 20 %)", memory_over_jobs, 240, uses=("fast",)),
        Figure(
            3,
            "3 throughput, WORKERS default",
            "≥ 95 % of 40 jobs/s",
            throughput_figure("default"),
            120,
            uses=("throughput",),
        ),
        Figure(
            4,
            "4 throughput 32 agents, WORKERS default",
            "≥ 90 % of 64 jobs/s",
            wide_throughput,
            150,
            uses=("wide",),
            remove_after=True,
        ),
        Figure(8, "8 QueueImageToText intake", "2 × today", intake, 60, uses=("slow",)),
    ]


EIGHT_WORKERS = Figure(3, "3 throughput, WORKERS=8", "no target", throughput_figure("8"), 120, uses=("throughput",))
