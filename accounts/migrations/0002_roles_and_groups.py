"""Create the role permissions and the groups (DOMAIN.md §3).

Permissions declared in a model's Meta only exist after `migrate` ends, so this migration
creates the content type and the permissions itself; Django's post-migrate step then finds
them and creates nothing twice.
"""

from django.db import migrations

from accounts.roles import GROUPS, ROLES
from accounts.setup import install_roles


def create_roles(apps, schema_editor):
    install_roles(apps)


def remove_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    Group.objects.filter(name__in=list(GROUPS)).delete()
    Permission.objects.filter(content_type__app_label="accounts", codename__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
