"""A partial index over the shown branch of each dialogue (messages not replaced)."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0006_limits'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('replaced', False)), fields=['dialogue', 'id'], name='message_path_idx'),
        ),
    ]
