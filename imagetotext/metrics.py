"""The server's figures for Prometheus, read from the database at each scrape.

Whichever process answers /metrics gives the same figures, since they come from the rows and
not from counters one process keeps. A scrape is eight aggregate queries however many jobs
there are (each still reads the rows it counts: about 0.5 s for 100,000 jobs on SQLite). The
histograms count the finished jobs still in the database, so they shrink when retention deletes
jobs (Prometheus reads that as a counter reset).

Time to first token is read from Job.first_token_at, which the run keeps in memory and saves
with the outcome (no write on the streaming path).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Count, FloatField, Func, Min, QuerySet
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agents.models import Agent
from imagetotext.dispatch import slots_held
from imagetotext.leases import alive_workers
from imagetotext.models import CallbackAttempt, CallbackDelivery, Job, State

log = logging.getLogger(__name__)

# Seconds from a job's start to its end on the backend: a short OCR read to a long cold load.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250)
# Seconds from a job's start to its first text: a warm model's first token to a cold load.
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class Seconds(Func):
    """Seconds from one datetime column to another, as a float, in SQL native to each database.

    On SQLite, Django keeps a datetime as text ("2026-05-01 12:33:20.123456", UTC): whole seconds
    from strftime, plus the fractions. julianday() would keep only milliseconds, and Django's own
    subtraction is a Python function called for every row.
    """

    arity = 2
    output_field = FloatField()
    # EXTRACT gives numeric on PostgreSQL 14 and later: a float, as on SQLite. A % in the SQL is
    # doubled, as the query goes to the driver with parameters.
    template = "CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS double precision)"
    sqlite_template = (
        "((CAST(strftime('%%s', {end}) AS INTEGER) - CAST(strftime('%%s', {start}) AS INTEGER))"
        " + (CAST(substr({end}, 20) AS REAL) - CAST(substr({start}, 20) AS REAL)))"
    )

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return self.spelled(self.template, compiler)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return self.spelled(self.sqlite_template, compiler)

    def spelled(self, template: str, compiler: Any) -> tuple[str, list[Any]]:
        (start, start_params), (end, end_params) = (compiler.compile(e) for e in self.get_source_expressions())
        if start_params or end_params:
            raise ValueError("Seconds takes two columns")
        return template.format(start=start, end=end), []


@dataclass(frozen=True)
class AgentLoad:
    pk: int
    name: str
    kind: str
    up: bool  # enabled, and answered its last check
    enabled: bool
    in_flight: int
    concurrency: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.in_flight / self.concurrency)) if self.concurrency else 100


@dataclass(frozen=True)
class Queue:
    depth: int
    oldest_at: datetime | None  # since when the longest-waiting job waits

    @property
    def oldest_age(self) -> float:
        """Seconds the longest-waiting job has waited; 0 when none waits."""
        return (timezone.now() - self.oldest_at).total_seconds() if self.oldest_at else 0.0


def agent_loads() -> list[AgentLoad]:
    """Every agent with the jobs holding its slots now, counted as the dispatcher counts them."""
    in_flight = slots_held()
    return [
        AgentLoad(a.pk, a.name, a.kind, a.enabled and a.online, a.enabled, in_flight[a.pk], a.concurrency)
        for a in Agent.objects.only("name", "kind", "enabled", "online", "concurrency").order_by("name")
    ]


def queue_figures() -> Queue:
    figures = Job.objects.filter(state=State.QUEUED).aggregate(depth=Count("pk"), oldest=Min("queued_at"))
    return Queue(figures["depth"], figures["oldest"])


# Each run's seconds are worked out once, in a MATERIALIZED common table expression (SQLite 3.35
# and PostgreSQL 12 on): inlined, SQLite parsed both dates again in every bucket's CASE, and a
# scrape of 100,000 jobs took four seconds instead of 0.4.
HISTOGRAMS_SQL = """
WITH runs (agent, model, tokens, seconds, first) AS MATERIALIZED ({runs})
SELECT agent, model, COUNT(*), COALESCE(SUM(seconds), 0), {latency_buckets},
    SUM(CASE WHEN {timed} THEN 1 ELSE 0 END), COALESCE(SUM(CASE WHEN {timed} THEN tokens / seconds END), 0),
    {speed_buckets},
    SUM(CASE WHEN first IS NOT NULL THEN 1 ELSE 0 END), COALESCE(SUM(first), 0), {first_buckets}
FROM runs GROUP BY agent, model ORDER BY agent, model
"""
TIMED = "tokens > 0 AND seconds > 0"  # a run whose tokens per second can be told


def completed_runs() -> QuerySet[Job, dict[str, Any]]:
    """One row per completed job: its agent's name, its model, completion tokens, the run's seconds
    and the seconds to its first text (NULL for a job that ran before they were kept)."""
    done = Job.objects.filter(state=State.COMPLETED, started_at__isnull=False, finished_at__isnull=False)
    timed = done.annotate(seconds=Seconds("started_at", "finished_at"), first=Seconds("started_at", "first_token_at"))
    return timed.values("agent__name", "model", "completion_tokens", "seconds", "first").order_by()


def histogram_rows() -> list[tuple[Any, ...]]:
    """Per agent and model: runs, their seconds, the latency buckets; timed runs, their tokens/s, its
    buckets; runs whose first text was timed, those seconds, their buckets."""
    runs, params = completed_runs().query.sql_with_params()
    at_most = "SUM(CASE WHEN seconds <= %s THEN 1 ELSE 0 END)"
    speed_at_most = f"SUM(CASE WHEN {TIMED} AND tokens <= seconds * %s THEN 1 ELSE 0 END)"  # no division
    first_at_most = "SUM(CASE WHEN first <= %s THEN 1 ELSE 0 END)"
    sql = HISTOGRAMS_SQL.format(
        runs=runs,
        timed=TIMED,
        latency_buckets=", ".join([at_most] * len(LATENCY_BUCKETS)),
        speed_buckets=", ".join([speed_at_most] * len(TOKENS_PER_SECOND_BUCKETS)),
        first_buckets=", ".join([first_at_most] * len(FIRST_TOKEN_BUCKETS)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *LATENCY_BUCKETS, *TOKENS_PER_SECOND_BUCKETS, *FIRST_TOKEN_BUCKETS])
        return cursor.fetchall()


class DatabaseCollector(Collector):
    """Jobs, the queue, agents, workers and callbacks, as they are in the database now."""

    def collect(self) -> Iterator[Metric]:
        try:
            families = [*self.jobs(), *self.agents(), *self.histograms(), *self.callbacks()]
        except DatabaseError:
            log.exception("Metrics: the database could not be read")
            families = []
        up = GaugeMetricFamily("aiserver_database_up", "Whether the figures below could be read from the database.")
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "aiserver_jobs", "Jobs in the database, by state and model.", labels=["state", "model"]
        )
        for row in Job.objects.values("state", "model").annotate(count=Count("pk")).order_by("state", "model"):
            jobs.add_metric([row["state"], row["model"]], row["count"])
        queue = queue_figures()
        yield jobs
        yield GaugeMetricFamily("aiserver_queue_depth", "Jobs waiting in the queue (Queued).", value=queue.depth)
        yield GaugeMetricFamily(
            "aiserver_queue_oldest_age_seconds", "How long the longest-waiting queued job has waited.", queue.oldest_age
        )
        yield GaugeMetricFamily("aiserver_workers_alive", "Worker processes with a recent heartbeat.", alive_workers())

    def agents(self) -> Iterator[Metric]:
        labels = ["agent", "kind"]
        up = GaugeMetricFamily(
            "aiserver_agent_up", "1 when the agent is enabled and answered its last check.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "aiserver_agent_in_flight", "Jobs holding one of the agent's slots.", labels=labels
        )
        slots = GaugeMetricFamily("aiserver_agent_concurrency", "Jobs the agent may run at once.", labels=labels)
        for agent in agent_loads():
            up.add_metric([agent.name, agent.kind], int(agent.up))
            in_flight.add_metric([agent.name, agent.kind], agent.in_flight)
            slots.add_metric([agent.name, agent.kind], agent.concurrency)
        yield from (up, in_flight, slots)

    def histograms(self) -> Iterator[Metric]:
        labels = ["agent", "model"]
        latency = HistogramMetricFamily(
            "aiserver_job_duration_seconds", "Seconds from a completed job's start to its end.", labels=labels
        )
        speed = HistogramMetricFamily(
            "aiserver_job_tokens_per_second",
            "Completion tokens per second over a completed job's whole run, for jobs that report tokens.",
            labels=labels,
        )
        first_token = HistogramMetricFamily(
            "aiserver_job_first_token_seconds",
            "Seconds from a completed job's start to the first text its backend sent.",
            labels=labels,
        )
        n, m = len(LATENCY_BUCKETS), len(TOKENS_PER_SECOND_BUCKETS)
        for agent, model, runs, seconds, *figures in histogram_rows():
            label = [agent or "", model]
            latency.add_metric(label, buckets(LATENCY_BUCKETS, figures[:n], runs), float(seconds))
            timed, tokens_per_second = figures[n], figures[n + 1]
            if timed:
                speed.add_metric(
                    label,
                    buckets(TOKENS_PER_SECOND_BUCKETS, figures[n + 2 : n + 2 + m], timed),
                    float(tokens_per_second),
                )
            first, first_seconds = figures[n + 2 + m], figures[n + 3 + m]
            if first:
                first_token.add_metric(
                    label, buckets(FIRST_TOKEN_BUCKETS, figures[n + 4 + m :], first), float(first_seconds)
                )
        yield from (latency, speed, first_token)

    def callbacks(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "aiserver_callback_deliveries", "Callbacks owed to ReplyTo URLs, by state.", labels=["state"]
        )
        for row in CallbackDelivery.objects.values("state").annotate(count=Count("pk")).order_by("state"):
            deliveries.add_metric([row["state"]], row["count"])
        attempts = CounterMetricFamily(
            "aiserver_callback_attempts", "Callback POSTs made, by outcome.", labels=["outcome"]
        )
        for row in CallbackAttempt.objects.values("outcome").annotate(count=Count("pk")).order_by("outcome"):
            attempts.add_metric([row["outcome"]], row["count"])
        yield from (deliveries, attempts)


def buckets(bounds: Sequence[float], counts: Sequence[int], total: int) -> list[tuple[str, float]]:
    """Prometheus' cumulative buckets: each bound with its count, then +Inf with them all."""
    return [*((floatToGoString(bound), count) for bound, count in zip(bounds, counts)), ("+Inf", total)]
