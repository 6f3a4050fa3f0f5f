import django.db.models.functions.text
from django.db import migrations, models

import django_synerise.migration_operations


class Migration(migrations.Migration):
    # The indexes are built concurrently on PostgreSQL, which cannot run in a transaction.
    atomic = False

    dependencies = [
        ('django_synerise', '0006_refresh_work_counts'),
    ]

    operations = [
        django_synerise.migration_operations.AddIndexConcurrently(
            model_name='syneriseaccount',
            index=models.Index(django.db.models.functions.text.Upper('email'), name='synerise_account_email_ci_idx'),
        ),
        django_synerise.migration_operations.AddIndexConcurrently(
            model_name='syneriseaccount',
            index=models.Index(fields=['custom_id'], name='synerise_account_custom_id_idx'),
        ),
    ]
