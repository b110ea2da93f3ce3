"""Install the role permissions and groups. Used by the data migration (with its historical
`apps`) and by tests whose database was flushed (transactional tests)."""

from .roles import GROUPS, ROLE_CONTENT_TYPE, ROLES


def install_roles(apps) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    ContentType.objects.clear_cache()
    app_label, model = ROLE_CONTENT_TYPE
    ct, _ = ContentType.objects.get_or_create(app_label=app_label, model=model)
    perms = {}
    for role in ROLES.values():
        perm, _ = Permission.objects.get_or_create(content_type=ct, codename=role.codename, defaults={"name": role.name})
        perms[role.codename] = perm
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*(perms[c] for c in codenames))
