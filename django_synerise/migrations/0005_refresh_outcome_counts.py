from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_synerise', '0004_identity_subject'),
    ]

    operations = [
        migrations.CreateModel(
            name='RefreshOutcomeCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField(help_text='Start of the hour (UTC).', verbose_name='hour')),
                ('outcome', models.CharField(choices=[('refreshed', 'Refreshed'), ('transient', 'Failed transiently (retried)'), ('needs_login', 'Needs login'), ('halted', 'Halted (API key rejected)'), ('run', 'Scheduler run')], max_length=16, verbose_name='outcome')),
                ('count', models.PositiveBigIntegerField(default=0, verbose_name='count')),
                ('updated_at', models.DateTimeField(verbose_name='updated at')),
            ],
            options={
                'verbose_name': 'refresh outcome count',
                'verbose_name_plural': 'refresh outcome counts',
                'constraints': [models.UniqueConstraint(fields=('hour', 'outcome'), name='synerise_outcome_hour_uniq')],
            },
        ),
    ]
