"""PostgreSQL only: a GIN index on Profile.attributes (jsonb_path_ops) so that filter conditions
`attributes__<key> equals <value>` (evaluated as `attributes @> {...}`) use an index. SQLite has
no such index type; the portable path there scans, which is fine at its scale."""

from django.db import migrations


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS audiences_profile_attributes_gin "
            "ON audiences_profile USING gin (attributes jsonb_path_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS audiences_profile_attributes_gin")


class Migration(migrations.Migration):
    dependencies = [("audiences", "0002_imports_and_quarantine_audit")]
    operations = [migrations.RunPython(create, drop)]
