"""The few statements every turn makes, as SQL built once instead of compiled per call.

The ORM builds and compiles each statement anew: on the benchmark machine an INSERT through
``Model.objects.create`` costs ~250 us of CPU, ``message_append`` ~1 ms. A turn makes a dozen
such statements, and with 100 turns starting at once that CPU is what first tokens wait behind
(bench/README.md). Here the SQL text is made once per model; every value still goes through
its field's ``get_db_prep_save``, so rows are stored exactly as the ORM stores them, on SQLite
and PostgreSQL alike. Only plain rows: no model here has save() logic or save signals.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)


@functools.cache
def _insert_sql(model: type[Model], vendor: str) -> tuple[str, tuple[Field[Any, Any], ...]]:
    quote = connection.ops.quote_name
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    pk = model._meta.pk
    assert pk is not None
    # Names from the model's metadata, quoted; every value is a parameter.
    sql = "INSERT INTO {} ({}) VALUES ({}) RETURNING {}".format(  # noqa: S608
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
        quote(pk.column),
    )
    return sql, fields


def insert(model: type[M], /, **values: Any) -> M:
    """``model.objects.create(**values)`` for a model with an automatic primary key."""
    row = model(**values)
    sql, fields = _insert_sql(model, connection.vendor)
    params = [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (row.pk,) = cursor.fetchone()
    row._state.adding = False
    row._state.db = connection.alias
    return row


def db_value(model: type[Model], field: str, value: Any) -> Any:
    """``value`` as the database stores ``model.field`` (a datetime on SQLite is text)."""
    return model._meta.get_field(field).get_db_prep_save(value, connection)  # type: ignore[union-attr]


def update(sql: str, params: list[Any]) -> int:
    """Run one UPDATE; the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def select(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The rows a statement returns (a SELECT, or an UPDATE ... RETURNING)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def from_db(model: type[Model], field: str, value: Any) -> Any:
    """A value read by hand as the ORM would return it (a JSON column's text, parsed)."""
    f = model._meta.get_field(field)
    convert = getattr(f, "from_db_value", None)
    return value if convert is None or value is None else convert(value, None, connection)
