"""Trigram indexes for `icontains` search over message text and titles (PostgreSQL).

Django's `icontains` is `UPPER(col) LIKE UPPER(%s)` on PostgreSQL, which a GIN
trigram index on `UPPER(col)` serves. Other databases, or a role that may not create
the pg_trgm extension, keep working without the index (a warning says so).
"""

import logging

from django.db import migrations, transaction

log = logging.getLogger(__name__)

STATEMENTS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS message_content_trgm ON conversations_message "
    "USING gin (UPPER(content) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS dialogue_title_trgm ON conversations_dialogue "
    "USING gin (UPPER(title) gin_trgm_ops)",
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            for sql in STATEMENTS:
                schema_editor.execute(sql)
    except Exception as exc:  # noqa: BLE001 - an optional speed-up, never a failed deploy
        log.warning("search indexes not created (%s); search works, only slower", exc)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS message_content_trgm")
    schema_editor.execute("DROP INDEX IF EXISTS dialogue_title_trgm")


class Migration(migrations.Migration):
    dependencies = [("conversations", "0001_initial")]
    operations = [migrations.RunPython(create, drop, elidable=True)]
