"""Benchmark the built-in OCR agent the way a django-q2 worker runs it: jobs through run_job.

Run from the repository root: `.venv/bin/python benchmarks/bench_local_agent.py`.
Every figure comes from fresh worker processes on a scratch SQLite database (DATA_DIR in a
temporary folder, migrated first): one worker's cold start, warm time per image and peak
memory; then throughput of one worker against two running side by side, with the ONNX
Runtime threads as configured (agents.clients.ocr.threads_per_worker) and at its default (all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from tests.drawing import encode, load_font, screenshot, sign_photo  # noqa: E402

WORDS = "invoice total amount due please pay within thirty days thank you order number".split()
# Each worker waits for this file before its timed jobs, so parallel workers start together.
GO_FILE = "go"


def dense_page() -> Image.Image:
    """Half an A4 page at 150 dpi packed with 18 px text."""
    rng, font = random.Random(3), load_font("DejaVuSerif.ttf", 18)
    image = Image.new("RGB", (1240, 880), "white")
    canvas = ImageDraw.Draw(image)
    for y in range(40, 840, 28):
        canvas.text((60, y), " ".join(rng.choice(WORDS) for _ in range(14)), font=font, fill="black")
    return image


IMAGES: dict[str, Callable[[], bytes]] = {
    "screenshot 1024x600 PNG": lambda: encode(screenshot()),
    "sign photo 1200x800 JPEG": lambda: encode(sign_photo(), "JPEG", quality=90),
    "dense page 1240x880 PNG": lambda: encode(dense_page()),
}


# --- inside a worker process -------------------------------------------------------------------


def worker(rounds: int, threads: int | None, barrier: Path | None) -> None:
    """Run every image through run_job `rounds` times; print one JSON line per job, then memory."""
    started = time.perf_counter()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiserver.settings")
    import django

    django.setup()
    from agents.clients import ocr

    if threads is not None:
        ocr.threads_per_worker = lambda: threads  # type: ignore[assignment]
    owner, images = prepare_worker(), {name: make() for name, make in IMAGES.items()}
    report({"event": "ready", "seconds": time.perf_counter() - started})
    if barrier:
        run_one_job(owner, "warm-up", images["screenshot 1024x600 PNG"])  # loads the models, untimed
        report({"event": "warm"})
        while not barrier.exists():
            time.sleep(0.01)
    began = time.time()
    for _ in range(rounds):
        for name, data in images.items():
            run_one_job(owner, name, data)
    report({"event": "done", "began": began, "ended": time.time(), "peak_mb": peak_rss_mb()})


def prepare_worker() -> object:
    """The built-in agent registered and checked (which does not load the models), and a user."""
    from django.contrib.auth import get_user_model

    from agents.health import check_agent
    from agents.registration import register_local_agent

    agent = register_local_agent()
    if agent is None or not check_agent(agent):
        sys.exit(f"The built-in OCR agent is not available: {agent and agent.last_error}")
    user, _ = get_user_model().objects.get_or_create(username=f"bench-{os.getpid()}")
    return user


def run_one_job(owner: object, name: str, data: bytes) -> None:
    """Submit a job as the API would, then run it as a worker does, timing only the run."""
    from agents.clients.local import OCR_MODEL
    from imagetotext.images import read_upload
    from imagetotext.jobs import JobRequest, create_with_upload, validate
    from imagetotext.models import Job, State
    from imagetotext.tasks import run_assigned

    job = create_with_upload(validate(JobRequest(owner=owner, model=OCR_MODEL)), read_upload(data))
    started = time.perf_counter()
    run_assigned(job.pk)
    seconds = time.perf_counter() - started
    job.refresh_from_db()
    if job.state != State.COMPLETED:
        sys.exit(f"Job {job.pk} ({name}) ended {job.state}: {job.error or job.status}")
    ocr_seconds = job.result["seconds"]
    report({"event": "job", "image": name, "seconds": seconds, "ocr": ocr_seconds, "chars": len(job.output)})
    Job.objects.filter(pk=job.pk).delete()  # keeps the scratch database small between rounds


def report(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the orchestrating process --------------------------------------------------------------------


def scratch_environment(data_dir: Path) -> dict[str, str]:
    """This environment pointed at a scratch SQLite database, with the local agent on."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "CHANNELS_DB"}}
    return {**env, "DATA_DIR": str(data_dir), "LOCAL_AGENT": "1", "WORKERS": "2", "LOG_LEVEL": "WARNING"}


def start_worker(env: dict[str, str], rounds: int, threads: int | None, barrier: Path | None) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--worker", "--rounds", str(rounds)]
    command += ["--threads", str(threads)] if threads is not None else []
    command += ["--barrier", str(barrier)] if barrier else []
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def lines_of(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    """Every JSON line the worker printed; stops the benchmark if the worker failed."""
    out, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        sys.exit(f"A worker failed (exit {process.returncode})")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def wait_for(process: subprocess.Popen[str], event: str) -> None:
    """Read the worker's lines until it reports this event."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("{") and json.loads(line)["event"] == event:
            return
    sys.exit(f"A worker stopped before reporting {event!r}")


def single_worker(env: dict[str, str], rounds: int) -> None:
    """Cold start, warm time per image and peak memory of one fresh worker."""
    lines = lines_of(start_worker(env, rounds, None, None))
    ready = next(line for line in lines if line["event"] == "ready")
    jobs = [line for line in lines if line["event"] == "job"]
    first, warm = jobs[0], jobs[1:]
    print(f"django setup + agent check: {ready['seconds']:.2f} s (models not loaded yet)")
    print(f"cold start, first job incl. model load ({first['image']}): {first['seconds']:.2f} s")
    for name in IMAGES:
        times = [job for job in warm if job["image"] == name]
        per = ", ".join(f"{job['seconds']:.2f} s (OCR {job['ocr']:.2f})" for job in times)
        print(f"  warm {name:26} {per}")
    print(f"peak memory (ru_maxrss): {lines[-1]['peak_mb']:.0f} MB")


def throughput(env: dict[str, str], workers: int, threads: int | None, scratch: Path, rounds: int) -> float:
    """Jobs a second when `workers` warmed-up processes each run every image `rounds` times."""
    barrier = scratch / f"{GO_FILE}-{workers}-{threads}"
    env = {**env, "WORKERS": str(workers)}  # as a deployment with this many workers would run
    processes = [start_worker(env, rounds, threads, barrier) for _ in range(workers)]
    for process in processes:
        wait_for(process, "warm")
    barrier.touch()
    done = [lines_of(process)[-1] for process in processes]
    jobs = workers * rounds * len(IMAGES)
    wall = max(float(d["ended"]) for d in done) - min(float(d["began"]) for d in done)
    peak = max(float(d["peak_mb"]) for d in done)
    label = "default (all cores)" if threads == -1 else f"as configured ({threads_label(workers)})"
    print(
        f"  {workers} worker(s), ONNX threads {label:22} {jobs:2} jobs in {wall:5.1f} s: "
        f"{jobs / wall:.2f} jobs/s, peak {peak:.0f} MB per worker"
    )
    return jobs / wall


def threads_label(workers: int) -> str:
    """What agents.clients.ocr.threads_per_worker gives with this many workers."""
    return f"{max(1, (os.cpu_count() or 1) // workers)} each" if workers > 1 else "all cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="times each image is run per worker")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.rounds, args.threads, args.barrier)
        return
    with tempfile.TemporaryDirectory(prefix="bench-local-agent-") as scratch:
        env = scratch_environment(Path(scratch))
        subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], env=env, cwd=ROOT, check=True)
        print(f"{os.cpu_count()} CPUs; scratch database in {scratch}")
        single_worker(env, args.rounds)
        print("throughput (models loaded before timing):")
        one = throughput(env, 1, None, Path(scratch), 1)
        capped = throughput(env, 2, None, Path(scratch), 1)
        uncapped = throughput(env, 2, -1, Path(scratch), 1)
        print(f"two workers against one: {capped / one:.2f}x as configured, {uncapped / one:.2f}x at the default")


if __name__ == "__main__":
    main()
