"""The message tree: each message gets its parent, today's replaced turns become
siblings of the turns that replaced them (the rule: `linear_parents`)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from conversations.tree_rule import linear_parents


def set_parents(apps, schema_editor):
    Message = apps.get_model("conversations", "Message")
    rows = (
        Message.objects.order_by("dialogue_id", "id")
        .values_list("dialogue_id", "id", "role", "replaced")
        .iterator(chunk_size=5000)
    )
    batch = []
    dialogue_id, turns = None, []

    def flush():
        for pk, parent in linear_parents(turns).items():
            if parent is not None:
                batch.append(Message(pk=pk, parent_id=parent))
        if len(batch) >= 2000:
            Message.objects.bulk_update(batch, ["parent"])
            batch.clear()

    for d, pk, role, replaced in rows:
        if d != dialogue_id and turns:
            flush()
            turns = []
        dialogue_id = d
        turns.append((pk, role, replaced))
    if turns:
        flush()
    if batch:
        Message.objects.bulk_update(batch, ["parent"])


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_share"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="dialogue",
            name="imported_from",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="conversations.message",
            ),
        ),
        migrations.AddIndex(
            model_name="dialogue",
            index=models.Index(
                condition=models.Q(("imported_from", ""), _negated=True),
                fields=["owner", "imported_from"],
                name="dialogue_import_idx",
            ),
        ),
    ]
