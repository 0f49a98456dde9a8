"""Which agent runs which queued job, never beyond an agent's concurrency.

AI Server's rule: among the agents that offer the model, the least busy one
(here: running jobs relative to concurrency), then the highest priority. A job
that finds no free agent stays queued until a slot frees up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from agents.models import Agent, AgentModel, Capability, Kind
from imagetotext import rows
from imagetotext.conf import Conf
from imagetotext.models import FINISHED, Job, State

BATCH = 200


# Offered each newly assigned job that is not the built-in OCR; True means "I will run it".
TakeHere = Callable[[int], bool]


def dispatch(take_here: TakeHere | None = None) -> list[int]:
    """Assign waiting jobs to free agents; returns their ids.

    Each goes to `take_here` if that takes it (the process calling runs it on its own
    threads), else to the workers through django-q2. The built-in OCR always goes to a
    worker, where it runs in the worker's own process: it is CPU-bound.
    """
    # A read without locking; only when a job may be assigned is the write lock taken.
    if not work_to_assign():
        return []
    with transaction.atomic():
        assigned = assign_waiting_jobs()
    hand_over(assigned, take_here)
    return [assignment.job_id for assignment in assigned]


class Assignment(NamedTuple):
    job_id: int
    agent: Agent

    @property
    def local(self) -> bool:
        """The built-in OCR: CPU-bound, so it runs in a worker process itself."""
        return self.agent.kind == Kind.LOCAL


def hand_over(assigned: list[Assignment], take_here: TakeHere | None = None) -> None:
    """Start newly assigned jobs: here if take_here takes them, else on the workers through django-q2."""
    for assignment in assigned:
        job_id, local = assignment.job_id, assignment.local
        if local or take_here is None or not take_here(job_id):
            async_task("imagetotext.tasks.run_job", job_id, inline=local, task_name=f"job-{job_id}")


# A job holds its agent's slot from its assignment until it ended and the process running it let
# go (a cancelled job's backend request may still be running; see imagetotext.leases).
UNFINISHED = sorted(set(State) - FINISHED)


def slots_held() -> Counter[int]:
    """Jobs holding a slot, per agent id, read in two parts that each stay on an index, whatever
    the number of jobs ever run: the unfinished ones (by state), and the ended ones whose run has
    not let go yet (by lease). One condition with OR, or a count joined from the agents, read every
    job each agent ever ran, at every dispatch."""
    held: Counter[int] = Counter()
    with connection.cursor() as cursor:
        cursor.execute(
            SLOTS_HELD_SQL,
            [*UNFINISHED, connection.ops.adapt_datetimefield_value(LEASES_BEGIN), *sorted(FINISHED)],
        )
        for agent_id, count in cursor.fetchall():
            held[agent_id] += count
    return held


# Earlier than any lease: "lease_until > this" is a range on its index (IS NOT NULL is not, on SQLite).
LEASES_BEGIN = datetime(2000, 1, 1, tzinfo=UTC)


def assign_waiting_jobs() -> list[Assignment]:
    """Give waiting jobs, oldest first, to free agents; returns which job went to which agent.

    It runs on every submission and every finished job, so its statements are written once
    (below), not ORM queries compiled each time: those were most of a short request's time.
    """
    take_turns()
    # Only the agents with a free slot, and only their models: with many agents, most are busy.
    load = slots_held()
    free = [agent for agent in usable_agents() if load[agent.pk] < agent.concurrency]
    if not free:
        return []  # every slot is busy: the usual case under load, so read no jobs
    offered = models_for_images(free)
    free = [agent for agent in free if offered[agent.pk]]
    # A worker that never starts its job (it died) lets another take it when this runs out.
    lease_end = timezone.now() + timedelta(seconds=Conf.ASSIGNED_LEASE_SECONDS)
    assigned: list[Assignment] = []
    taken: set[int] = set()
    slots = sum(agent.concurrency - load[agent.pk] for agent in free)
    for job in oldest_waiting(set().union(*offered.values()), slots, taken):
        if not (agent := pick(job, free, offered, load)):
            continue
        if claim(job.pk, agent, lease_end):
            taken.add(job.pk)
            load[agent.pk] += 1
            assigned.append(Assignment(job.pk, agent))
            free = [a for a in free if load[a.pk] < a.concurrency]
            if not free:
                break
    return assigned


class NewJob(NamedTuple):
    """Who takes a job about to be created. decided False: jobs wait for agents (or no usable
    agent offers the model), so the queue is dispatched as usual. agent None: it waits."""

    decided: bool
    agent: Agent | None = None


def agent_for_new_job(job: Job) -> NewJob:
    """The agent a job about to be created goes to, when no other job waits for one: then
    assign_waiting_jobs would weigh this job alone, and its choice is read here in one statement
    (two more on PostgreSQL: the dispatch lock and a second read under it), where it took six.
    Call it in the transaction that inserts the job, before the insert.

    Every synchronous request and most submissions find the queue empty; under load, jobs wait
    and the caller dispatches the queue as before.
    """
    found = agents_offering(job.model)
    if not found or any(waiting for _, _, waiting in found):
        return NewJob(False)
    if all(held >= agent.concurrency for agent, held, _ in found):
        return NewJob(True)  # busy: it waits, and a slot freed on one of them takes it (hand_on)
    if connection.vendor == "postgresql":  # SQLite: this transaction holds the write lock already
        take_turns()
        found = agents_offering(job.model)  # again, now that no other dispatcher can assign meanwhile
        if not found or any(waiting for _, _, waiting in found):
            return NewJob(False)
    load = Counter({agent.pk: held for agent, held, _ in found})
    free = [agent for agent, held, _ in found if held < agent.concurrency]
    return NewJob(True, pick(job, free, {agent.pk: {job.model} for agent in free}, load))


def agents_offering(model: str) -> list[tuple[Agent, int, bool]]:
    """The usable agents offering the model for images, with the slots each holds, and whether any job waits."""
    params = [*UNFINISHED, connection.ops.adapt_datetimefield_value(LEASES_BEGIN), *sorted(FINISHED)]
    return rows.fetch(NEW_JOB_SQL, [*params, State.QUEUED, model, Capability.TEXT], Agent)


def waiting_status(agent: Agent) -> str:
    """An assigned job's status until a worker starts it."""
    return f"Waiting for a worker on {agent.name}"


def hand_on(agent_id: int | None) -> list[Assignment]:
    """The slot a run on this agent just let go, given to the oldest job waiting for one of the
    agent's models (and not tried on it yet), in the transaction that let it go.

    No dispatch lock and no count of every agent: it only hands on the slot its own transaction
    freed, which no other dispatcher can see free before this commits, so the agent stays
    within its concurrency. Every finished job does this under load, and waiting in turn for the
    lock was most of a finished job's time on PostgreSQL. Assigns nothing (the caller then
    dispatches as usual) when the agent is no longer usable or is over its concurrency (it was
    lowered), or when no waiting job it could run is among the oldest few.
    """
    if agent_id is None:
        return []
    found = rows.fetch(
        AGENT_LOAD_SQL,
        [*UNFINISHED, connection.ops.adapt_datetimefield_value(LEASES_BEGIN), *sorted(FINISHED), agent_id],
        Agent,
    )
    if not found or found[0][1] >= found[0][0].concurrency:
        return []
    agent = found[0][0]
    lease_end = timezone.now() + timedelta(seconds=Conf.ASSIGNED_LEASE_SECONDS)
    for job in Job.objects.raw(WAITING_FOR_AGENT_SQL, [State.QUEUED, agent.pk, Capability.TEXT, HAND_ON_PAGE]):
        if agent.pk not in job.tried_agents and claim(job.pk, agent, lease_end):
            return [Assignment(job.pk, agent)]
    return []


# How many of the oldest jobs waiting for an agent's models hand_on looks at.
HAND_ON_PAGE = 8


def usable_agents() -> list[Agent]:
    """The enabled agents that answered their last check, by id."""
    return [agent for (agent,) in rows.fetch(USABLE_AGENTS_SQL, [], Agent)]


def models_for_images(agents: list[Agent]) -> dict[int, set[str]]:
    """The names of the models each agent offers for images."""
    offered: dict[int, set[str]] = {agent.pk: set() for agent in agents}
    with connection.cursor() as cursor:
        cursor.execute(MODELS_SQL.format(ids=", ".join(["%s"] * len(agents))), [Capability.TEXT, *offered])
        for agent_id, name in cursor.fetchall():
            offered[agent_id].add(name)
    return offered


def oldest_waiting(models: set[str], slots: int, taken: set[int]) -> Iterator[Job]:
    """Up to BATCH jobs waiting for one of the models, oldest first, read a page of about the free
    slots at a time: most often the first page fills them, however long the queue (a batch of
    thousands).

    taken: the ids of the jobs yielded that the caller claimed since. Those left the queue, so
    the next page starts after the jobs passed over only.
    """
    if not models:
        return
    page, read = min(max(2 * slots, 8), BATCH), 0
    sql = WAITING_SQL.format(models=", ".join(["%s"] * len(models)))
    while read < BATCH:
        passed = read - len(taken)
        jobs = list(Job.objects.raw(sql, [State.QUEUED, *sorted(models), page, passed]))
        yield from jobs
        read += len(jobs)
        if len(jobs) < page:
            return


def claim(job_id: int, agent: Agent, lease_end: datetime) -> bool:
    """Give a waiting job to the agent; False if it left the queue meanwhile."""
    status = waiting_status(agent)
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_SQL, [agent.pk, status, connection.ops.adapt_datetimefield_value(lease_end), job_id, State.QUEUED]
        )
        return cursor.rowcount == 1


def take_turns() -> None:
    """Make concurrent dispatchers (any process) assign one after the other, until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock, one statement whatever the number of agents.
    SQLite: the IMMEDIATE transaction (and aiserver.sqlite's write lock) already does it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DISPATCH_LOCK])


# The advisory lock's key: any constant; this one spells "jobs" in ASCII.
DISPATCH_LOCK = 0x6A6F6273


def work_to_assign() -> bool:
    """Whether a job waits for a model that some usable agent with a free slot offers.

    A read, so it may be stale. It runs after every submission and every finished job, so it is
    one statement written once, not an ORM query compiled each time (that took most of its cost).
    Asked per model: a queue for a busy model must not send every submission through a write
    transaction because some other agent sits idle.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            WORK_TO_ASSIGN_SQL,
            [
                Capability.TEXT,
                State.QUEUED,
                *UNFINISHED,
                connection.ops.adapt_datetimefield_value(LEASES_BEGIN),
                *sorted(FINISHED),
            ],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _work_to_assign_sql() -> str:
    """The agent's slots held are counted in two index lookups, as in slots_held: the unary plus
    keeps SQLite from reading the ended jobs' count through the agent's index (all its jobs)."""
    quote = connection.ops.quote_name
    plus = "+" if connection.vendor == "sqlite" else ""  # PostgreSQL has no unary + on text, nor needs it
    job, agent, model = (quote(m._meta.db_table) for m in (Job, Agent, AgentModel))
    unfinished = ", ".join(["%s"] * len(UNFINISHED))
    finished = ", ".join(["%s"] * len(FINISHED))
    return (
        f"SELECT EXISTS (SELECT 1 FROM {agent} a JOIN {model} m ON m.agent_id = a.id"
        f" WHERE a.enabled AND a.online AND m.capability <> %s"
        f" AND EXISTS (SELECT 1 FROM {job} w WHERE w.model = m.name AND w.state = %s AND w.agent_id IS NULL)"
        f" AND a.concurrency > (SELECT COUNT(*) FROM {job} j WHERE j.agent_id = a.id AND j.state IN ({unfinished}))"
        f" + (SELECT COUNT(*) FROM {job} e WHERE e.lease_until > %s AND {plus}e.agent_id = a.id"
        f" AND {plus}e.state IN ({finished})))"
    )


WORK_TO_ASSIGN_SQL = _work_to_assign_sql()


def _statements() -> dict[str, str]:
    """The dispatcher's other statements, written once. On SQLite the unary plus keeps the
    planner off an index that reads more rows than the one it should use (see _work_to_assign_sql)."""
    quote = connection.ops.quote_name
    plus = "+" if connection.vendor == "sqlite" else ""
    job, agent, model = (quote(m._meta.db_table) for m in (Job, Agent, AgentModel))
    unfinished = ", ".join(["%s"] * len(UNFINISHED))
    finished = ", ".join(["%s"] * len(FINISHED))
    # The slots agent a's jobs hold, counted as in "slots".
    held = (
        f"(SELECT COUNT(*) FROM {job} j WHERE j.agent_id = a.id AND j.state IN ({unfinished}))"
        f" + (SELECT COUNT(*) FROM {job} e WHERE e.lease_until > %s AND {plus}e.agent_id = a.id"
        f" AND {plus}e.state IN ({finished}))"
    )
    return {
        "slots": (
            f"SELECT agent_id, COUNT(*) FROM {job} WHERE state IN ({unfinished}) AND agent_id IS NOT NULL"
            f" GROUP BY agent_id UNION ALL SELECT agent_id, COUNT(*) FROM {job}"
            f" WHERE lease_until > %s AND agent_id IS NOT NULL AND {plus}state IN ({finished}) GROUP BY agent_id"
        ),
        "agents": f"SELECT {rows.columns(Agent)} FROM {agent} WHERE enabled AND online ORDER BY id",
        # {ids} and {models}: as many placeholders as there are values, filled in when used.
        "models": f"SELECT agent_id, name FROM {model} WHERE capability <> %s AND agent_id IN ({{ids}})",
        "waiting": (
            f"SELECT id, model, tried_agents FROM {job} WHERE state = %s AND agent_id IS NULL"
            f" AND model IN ({{models}}) ORDER BY created_at, id LIMIT %s OFFSET %s"
        ),
        "claim": f"UPDATE {job} SET agent_id = %s, status = %s, lease_until = %s WHERE id = %s AND state = %s"
        " AND agent_id IS NULL",
        # One agent, if usable, with the slots its jobs hold (counted as in "slots").
        "agent_load": f"SELECT {rows.columns(Agent, 'a')}, {held} FROM {agent} a WHERE a.id = %s AND a.enabled AND a.online",
        # The usable agents offering a model for images, each with the slots held, and whether any
        # job waits for an agent (uncorrelated: read once).
        "new_job": (
            f"SELECT {rows.columns(Agent, 'a')}, {held},"
            f" EXISTS (SELECT 1 FROM {job} w WHERE w.state = %s AND w.agent_id IS NULL)"
            f" FROM {agent} a JOIN {model} m ON m.agent_id = a.id"
            f" WHERE m.name = %s AND m.capability <> %s AND a.enabled AND a.online"
        ),
        "waiting_for_agent": (
            f"SELECT id, model, tried_agents FROM {job} WHERE state = %s AND agent_id IS NULL"
            f" AND model IN (SELECT name FROM {model} WHERE agent_id = %s AND capability <> %s)"
            " ORDER BY created_at, id LIMIT %s"
        ),
    }


_SQL = _statements()
SLOTS_HELD_SQL, USABLE_AGENTS_SQL, MODELS_SQL = _SQL["slots"], _SQL["agents"], _SQL["models"]
WAITING_SQL, CLAIM_SQL = _SQL["waiting"], _SQL["claim"]
AGENT_LOAD_SQL, WAITING_FOR_AGENT_SQL = _SQL["agent_load"], _SQL["waiting_for_agent"]
NEW_JOB_SQL = _SQL["new_job"]


def pick(job: Job, free: list[Agent], offered: dict[int, set[str]], load: Counter[int]) -> Agent | None:
    """The least busy free agent (relative to its concurrency) that offers the job's model, then by priority."""
    fits = [a for a in free if job.model in offered[a.pk] and a.pk not in job.tried_agents]
    return min(fits, key=lambda a: (load[a.pk] / a.concurrency, -a.priority, a.pk), default=None)


def candidates(model: str, exclude: list[int] | None = None) -> list[Agent]:
    """Enabled, online agents that offer the model for images."""
    offering = AgentModel.objects.filter(name=model).accepting_images()
    return list(Agent.objects.usable().filter(models__in=offering).exclude(pk__in=exclude or []).distinct())


def queue_position(job: Job) -> int:
    """1 for the next job to be assigned an agent for this model."""
    earlier = Job.objects.filter(state=State.QUEUED, agent__isnull=True, model=job.model, created_at__lt=job.created_at)
    return earlier.count() + 1
