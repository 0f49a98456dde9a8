"""Benchmark the whole engine: the real server (web and workers) against fake Ollama backends.

Run from the repository root: `.venv/bin/python benchmarks/bench_engine.py [--config both] [--quick]`.

Each configuration gets a fresh store (embedded: a temporary DATA_DIR with SQLite; scale-out: a
scratch PostgreSQL database, created and dropped here, and Redis db 14, flushed) and its own
fake Ollama servers with fixed latencies, one group of fakes (and one model) per figure. The
server is started with `manage.py serve` twice: with WORKERS=8 for figure 3's second run, then
with default settings for everything else. Only HTTP, the WebSocket and management commands
reach it; the one application module imported here is imagetotext.images (figure 7, and the
images the direct baselines send, which are what the server sends its backend).

Figures (see docs/benchmarks.md for the method; every one beside its target and its direct call):
 1. time POST /api/ImageToText adds to a 100 ms backend: 1 MP JPEG (p50, p95) and 12 MP JPEG
 2. the same for POST /api/generate with stream: false
 3. throughput, 4 agents x concurrency 2 x 200 ms (limit 40 jobs/s), WORKERS default and 8
 4. throughput, 32 agents x concurrency 2 x 1 s (limit 64 jobs/s), and the cluster's memory
 5. /api/generate streaming: time to first token added, and NDJSON lines relayed
 6. worker -> WebSocket: the fake sent its last byte -> the Completed card arrived, p95
 7. imagetotext.images.prepare of a 24 MP JPEG for a 1024 px model: time and bytes in/out
 8. QueueImageToText intake from 8 concurrent clients
 9. memory of daphne and of the django-q2 cluster before and after 500 jobs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from enginebench.browser import Browser, SignInFailed
from enginebench.fakes import Group, backends
from enginebench.figures import (
    EIGHT_WORKERS,
    FULL,
    QUICK,
    Bench,
    Figure,
    Photo,
    Sizes,
    figures,
    run_figure,
)
from enginebench.media import photo_jpeg
from enginebench.report import Row, not_reached, p50, table, verdict, write_doc
from enginebench.server import (
    AgentSpec,
    Server,
    ServerFailed,
    embedded_store,
    manage,
    register_agents,
    remove_agents,
    running_server,
    scaleout_store,
    scaleout_unavailable,
)

Prepare = Callable[[bytes, int], tuple[bytes, str]]
LONGEST_SIDE = 1024
TITLES = {
    "embedded": "Embedded (SQLite, django-q2 ORM broker, SQLite channel layer)",
    "scaleout": "Scale-out (PostgreSQL, Redis broker, channels-redis)",
}


# --- figure 7 and the photos: no server ----------------------------------------------------------------


def load_prepare(data_dir: Path) -> Prepare:
    """imagetotext.images.prepare, with Django's settings read for a scratch DATA_DIR."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "aiserver.settings"
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ["LOG_LEVEL"] = "WARNING"  # the settings' root logger would print every httpx request
    import django

    django.setup()
    from imagetotext.images import prepare

    return prepare


def prepare_figure(prepare: Prepare, data: bytes, runs: int) -> list[Row]:
    """Figure 7: prepare() of a 24 MP photo for a 1024 px model, median of `runs` after one warm-up."""
    prepare(data, LONGEST_SIDE)
    seconds, out = [], b""
    for _ in range(runs):
        started = time.perf_counter()
        out, _ = prepare(data, LONGEST_SIDE)
        seconds.append(time.perf_counter() - started)
    took, smaller = p50(seconds), len(data) / len(out)
    return [
        Row(
            7,
            "7 prepare 24 MP JPEG for 1024 px: time (median)",
            f"{took * 1000:.0f} ms",
            "-",
            "≤ 120 ms",
            verdict(took <= 0.120, f"{took / 0.120:.2f}× target"),
        ),
        Row(
            7,
            "7 prepare 24 MP JPEG: bytes in → out",
            f"{len(data) / 1e6:.1f} MB → {len(out) / 1e3:.0f} kB",
            "-",
            "≥ 10× fewer",
            verdict(smaller >= 10, f"{smaller:.0f}× fewer"),
        ),
    ]


def make_photos(prepare: Prepare) -> dict[str, Photo]:
    """The uploads of figures 1, 2 and 5, each with the image the server sends its backend."""
    photos = {}
    for key, label, size in (("1mp", "1 MP JPEG", (1000, 1000)), ("12mp", "12 MP JPEG", (4000, 3000))):
        data = photo_jpeg(*size)
        photos[key] = Photo(label, data, prepare(data, LONGEST_SIDE)[0])
    return photos


# --- one configuration -------------------------------------------------------------------------------


async def run_configuration(
    config: str, env: dict[str, str], photos: dict[str, Photo], sizes: Sizes, args: argparse.Namespace
) -> Setup:
    """Fresh fakes, a migrated store, then figure 3 on WORKERS=8 and every other figure on the defaults."""
    only = {int(n) for n in args.only.split(",") if n.strip()}
    with backends() as groups:
        state = Setup(groups)
        started = time.monotonic()
        await asyncio.to_thread(manage, env, "migrate", "--verbosity", "0")
        note(config, f"migrated in {time.monotonic() - started:.0f} s")
        for label, workers, wanted in (("workers8", 8, [EIGHT_WORKERS]), ("default", None, figures(config))):
            wanted = [figure for figure in wanted if not only or figure.number in only]
            if not wanted:
                continue
            try:
                await on_server(config, env, label, workers, state, photos, sizes, wanted, args.spy)
            except ServerFailed as error:
                print(f"[{config}] {error}", file=sys.stderr, flush=True)
                state.failed = True
                why = f"server failed: {str(error).splitlines()[0][:60]}"
                state.rows += [
                    not_reached(f.number, f.title, f.target, why) for f in wanted if f.title not in state.ran
                ]
        return state


@dataclass
class Setup:
    """A configuration's run so far: the admin's API key, the registered groups of agents, the rows."""

    groups: dict[str, Group]
    key: str = ""
    registered: set[str] = field(default_factory=set)
    rows: list[Row] = field(default_factory=list)
    ran: set[str] = field(default_factory=set)  # titles of the figures that have rows
    failed: bool = False  # a server or management command failed


async def on_server(
    config: str,
    env: dict[str, str],
    label: str,
    workers: int | None,
    state: Setup,
    photos: dict[str, Photo],
    sizes: Sizes,
    wanted: list[Figure],
    spy: Path | None = None,
) -> None:
    """Start serve, run the figures one after the other (rows into state), stop it (also on errors and Ctrl-C)."""
    started = time.monotonic()
    with running_server(env, label, workers) as server, profiled(server, spy, f"{config}-{label}"):
        note(config, f"serve ({label}) answering after {time.monotonic() - started:.0f} s")
        if not state.key:  # serve created the admin account on its first start; the key is the admin's
            state.key = (await asyncio.to_thread(server.manage, "createapikey", "bench", "--owner", "admin")).strip()
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as http:
            bench = Bench(config, server, state.key, http, state.groups, photos, sizes)
            for figure in wanted:
                state.rows += await run_with_agents(bench, figure, state)
                state.ran.add(figure.title)
        count, last = server.logged_errors()
        if count:
            note(config, f"serve ({label}) logged {count} exception lines; the last: {last}")
        stopping = time.monotonic()
    note(config, f"serve ({label}) stopped in {time.monotonic() - stopping:.0f} s")


async def run_with_agents(bench: Bench, figure: Figure, state: Setup) -> list[Row]:
    """The figure's rows, its agents added first (and removed after it if it says so)."""
    try:
        await agents_for(bench, figure, state)
    except ServerFailed as error:
        return [not_reached(figure.number, figure.title, figure.target, f"agents: {error}"[:90])]
    rows = await timed(bench, figure)
    if figure.remove_after:
        names = [spec.name for name in figure.uses for spec in state.groups[name].agent_specs()]
        try:
            await asyncio.to_thread(remove_agents, bench.server.env, names)
        except ServerFailed as error:
            note(bench.config, f"could not remove the agents of figure {figure.number}: {error}")
        state.registered -= set(figure.uses)
    return rows


@contextmanager
def profiled(server: Server, folder: Path | None, name: str) -> Iterator[None]:
    """py-spy record on the web process and each worker while the figures run (a tool for finding the time)."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    time.sleep(3)  # the cluster's workers are forked a moment after daphne answers
    spies = [
        subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(pid),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(folder / f"{name}-{role}.txt"),
                *os.environ.get("BENCH_SPY_OPTIONS", "").split(),  # e.g. "--idle --threads"
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, pid in server.roles().items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(30)


def note(config: str, text: str) -> None:
    print(f"  [{config}] {text}", flush=True)


async def agents_for(bench: Bench, figure: Figure, state: Setup) -> None:
    """Register (and so check) the agents of the figure's groups that are not registered yet."""
    missing = [name for name in figure.uses if name not in state.registered]
    if missing:
        specs, started = [spec for name in missing for spec in state.groups[name].agent_specs()], time.monotonic()
        by_command = await add_agents(bench.server, specs)
        how = f" ({by_command} by manage.py agent add: the admin form refused them)" if by_command else ""
        note(bench.config, f"{len(specs)} agents added in {time.monotonic() - started:.1f} s{how}")
        state.registered |= set(missing)
    await wait_for_models(bench, {state.groups[name].model for name in figure.uses})


async def add_agents(server: Server, specs: list[AgentSpec]) -> int:
    """Through the admin's form, as an operator would (fast); `manage.py agent add` for any it refused.

    Returns how many needed the command."""
    try:
        async with Browser(server) as browser:
            refused = [spec for spec in specs if not await browser.add_agent(spec)]
    except (SignInFailed, httpx.HTTPError):
        refused = specs
    if refused:
        await asyncio.to_thread(register_agents, server.env, refused)
    return len(refused)


async def timed(bench: Bench, figure: Figure) -> list[Row]:
    started = time.monotonic()
    rows = await run_figure(bench, figure)
    note(bench.config, f"{figure.title}: {time.monotonic() - started:.0f} s")
    return rows


async def wait_for_models(bench: Bench, wanted: set[str], seconds: float = 30) -> None:
    """GET /api/ActiveAiModels until it lists every wanted model."""
    deadline = time.monotonic() + seconds
    while True:
        listed = set((await bench.http.get(bench.api("ActiveAiModels"))).json().get("results") or [])
        if wanted <= listed:
            return
        if time.monotonic() > deadline:
            raise ServerFailed(f"ActiveAiModels does not list {sorted(wanted - listed)}")
        await asyncio.sleep(0.3)


def configuration(config: str, photos: dict[str, Photo], sizes: Sizes, args: argparse.Namespace) -> Setup | None:
    """One configuration's run; None when it cannot run on this machine (scale-out without servers)."""
    if config == "embedded":
        store = embedded_store()
    else:
        if reason := scaleout_unavailable(args.database_url, args.redis_url):
            print(f"Skipping the scale-out configuration: {reason}", flush=True)
            return None
        store = scaleout_store(args.database_url, args.redis_url)
    with store as env:
        return asyncio.run(run_configuration(config, env, photos, sizes, args))


# --- main --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["embedded", "scaleout", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter windows")
    parser.add_argument("--only", default="", help="comma-separated figure numbers to run (e.g. 1,8); only prints")
    parser.add_argument(
        "--spy",
        type=Path,
        help="a folder: profile the web process and the workers with py-spy (if installed) into it, for each server",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server's database; the bench creates and drops its own next to it",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="a Redis database the bench may flush",
    )
    return parser.parse_args()


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM unwind the bench, so every server, fake and database is cleaned up."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored


def main() -> int:
    args, started = parse_args(), time.monotonic()
    stop_on_signals()
    sizes = QUICK if args.quick else FULL
    configs = ["embedded", "scaleout"] if args.config == "both" else [args.config]
    with tempfile.TemporaryDirectory(prefix="bench-engine-django-") as scratch:
        try:
            prepare = load_prepare(Path(scratch))
        except ImportError as error:
            print(
                f"bench_engine: cannot import the application ({error}); if the code is being moved, retry in a minute",
                file=sys.stderr,
            )
            return 1
        print(f"Figure 7 (no server), then {', '.join(configs)}; {'quick' if args.quick else 'full'} run", flush=True)
        sections = {"Without a server": table(prepare_figure(prepare, photo_jpeg(6000, 4000), 3 if args.quick else 5))}
        print(sections["Without a server"], flush=True)
        photos = make_photos(prepare)
    failed = False
    for config in configs:
        try:
            run = configuration(config, photos, sizes, args)
        except ServerFailed as error:  # before any server started: migrate
            print(f"[{config}] {error}", file=sys.stderr, flush=True)
            failed = True
            continue
        if run is None:
            continue
        failed = failed or run.failed
        sections[TITLES[config]] = table(run.rows)
        print(f"\n== {TITLES[config]}\n{sections[TITLES[config]]}", flush=True)
    wall = time.monotonic() - started
    print(f"\nbench_engine: {wall:.0f} s", flush=True)
    if not args.quick and not args.only and len(sections) == 3 and not failed:
        write_doc(sections, wall, "make bench (benchmarks/bench_engine.py)")
        print("Figures written to docs/benchmarks.md", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("bench_engine: interrupted; servers stopped and scratch databases dropped")
