"""Model instances from statements written once.

The hot path (an API key and its owner, a stored image by its hash, the agents a dispatch may
use, the job a thread is about to run) reads a handful of rows per request. An ORM query is
compiled anew on every call, and even `Model.objects.raw()` works out again, for every call,
which column goes to which field and how each value is converted. Here that plan is made once
per database connection and statement shape; what is left per row is the driver's work, the
values' converters (datetimes on SQLite, JSON, ...) and `Model.from_db`, as the ORM itself does.

A statement selects each model's columns with `columns()`, in the order of its fields; one
statement may select several models (a join), whose columns follow each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Model

M = TypeVar("M", bound=Model)

Converter = Callable[[Any, Any, Any], Any]
# Per model of a statement: the model, its fields' attribute names, where its columns start in the
# row, where its primary key is, and for each of its columns that needs converting, its place in the
# row, its converters and the column expression they are given.
Plan = list[tuple[type[Model], list[str], int, int, list[tuple[int, list[Converter], Any]]]]


def columns(model: type[Model], alias: str = "") -> str:
    """The model's columns, in the order of its fields, for a statement's SELECT list."""
    quote = connection.ops.quote_name
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{quote(field.column)}" for field in model._meta.concrete_fields)


def fetch(sql: str, params: Sequence[Any], *models: type[Model]) -> list[tuple[Any, ...]]:
    """Each row as one instance per model, in the order their columns were selected; None for a
    model whose primary key is NULL in the row (an outer join that found nothing). Columns
    selected after the models' come last in the tuple, as the driver gave them."""
    database = connections[DEFAULT_DB_ALIAS]  # this thread's connection (`connection` is a proxy)
    plan = _plan(database, models)
    with database.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [_instances(database, row, plan) for row in rows]


def fetch_one(model: type[M], sql: str, params: Sequence[Any]) -> M | None:
    """The first row's instance of the model, or None when there is no row."""
    rows = fetch(sql, params, model)
    return rows[0][0] if rows else None


def _plan(database: Any, models: tuple[type[Model], ...]) -> Plan:
    """What to do with a row of these models' columns, made once per connection (converters belong
    to a database's backend, and each thread has its own connection)."""
    plans: dict[tuple[type[Model], ...], Plan] = database.__dict__.setdefault("_imagetotext_row_plans", {})
    if (plan := plans.get(models)) is None:
        plan, start = [], 0
        for model in models:
            fields = model._meta.concrete_fields
            converting = []
            for position, field in enumerate(fields, start):
                column = field.get_col(model._meta.db_table)
                converters = database.ops.get_db_converters(column) + column.get_db_converters(database)
                if converters:
                    converting.append((position, converters, column))
            names = [field.attname for field in fields]
            plan.append((model, names, start, start + fields.index(model._meta.pk), converting))
            start += len(fields)
        plans[models] = plan
    return plan


def _instances(database: Any, row: tuple[Any, ...], plan: Plan) -> tuple[Any, ...]:
    values, made = list(row), list[Any]()
    for model, names, start, pk, converting in plan:
        if values[pk] is None:
            made.append(None)
            continue
        for position, converters, column in converting:
            value = values[position]
            for converter in converters:
                value = converter(value, column, database)
            values[position] = value
        made.append(model.from_db(database.alias, names, values[start : start + len(names)]))
    if plan:
        _, names, start, _, _ = plan[-1]
        made.extend(values[start + len(names) :])
    return tuple(made)


def insert(instance: Model, on_conflict: str = "") -> bool:
    """Insert a new instance in a statement written once per model, and set its primary key.

    Values are prepared as the ORM's own INSERT prepares them (`pre_save`, so `auto_now_add`
    fields are filled in, then `get_db_prep_save`). No `pre_save`/`post_save` signals are sent:
    use it only for models no receiver listens to. on_conflict: a unique column; when a row
    already holds the instance's value there, nothing is inserted (and no error breaks the
    transaction, so no savepoint is needed) and this returns False.
    """
    database = connections[DEFAULT_DB_ALIAS]
    model, meta = type(instance), instance._meta
    fields = [field for field in meta.concrete_fields if field is not meta.auto_field]
    key = (model, on_conflict)
    if (sql := _inserts.get(key)) is None:
        quote = database.ops.quote_name
        conflict = f" ON CONFLICT ({quote(on_conflict)}) DO NOTHING" if on_conflict else ""
        sql = _inserts[key] = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"
            f" VALUES ({', '.join(['%s'] * len(fields))}){conflict} RETURNING {quote(meta.pk.column)}"
        )
    values = [field.get_db_prep_save(field.pre_save(instance, True), connection=database) for field in fields]
    with database.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding, instance._state.db = False, database.alias
    return True


_inserts: dict[tuple[type[Model], str], str] = {}
