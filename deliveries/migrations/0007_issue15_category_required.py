# The category becomes required once every message has one (its own migration: on PostgreSQL the
# rows updated by the previous one must be committed before the table is altered).

import deliveries.models
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deliveries', '0006_issue15_categories'),
    ]

    operations = [
        migrations.AlterField(
            model_name='delivery',
            name='category',
            field=models.ForeignKey(default=deliveries.models.MessageCategory.default_id, on_delete=django.db.models.deletion.PROTECT, related_name='deliveries', to='deliveries.messagecategory'),
        ),
        migrations.RemoveField(
            model_name='delivery',
            name='requires_approval',
        ),
        migrations.AddField(
            model_name='delivery',
            name='edited_since_approval',
            field=models.JSONField(blank=True, default=list),
        ),
    ]
