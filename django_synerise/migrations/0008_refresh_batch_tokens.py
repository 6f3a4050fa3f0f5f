from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_synerise', '0007_account_lookup_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='refreshoutcomecount',
            name='outcome',
            field=models.CharField(choices=[('refreshed', 'Refreshed'), ('transient', 'Failed transiently (retried)'), ('needs_login', 'Needs login'), ('halted', 'Halted (API key rejected)'), ('run', 'Scheduler run'), ('batch', 'Refresh batch'), ('batch_refreshed', 'Tokens refreshed by batches'), ('busy_us', 'Batch time (microseconds)'), ('cpu_us', 'Batch CPU time (microseconds)')], max_length=16, verbose_name='outcome'),
        ),
    ]
