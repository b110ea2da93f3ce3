import importlib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import roles

DEMO_USERS = [
    # login, first name, last name, group, staff
    ("admin", "Ada", "Admin", roles.ADMINISTRATORS, True),
    ("marketer", "Mia", "Marketer", roles.STANDARD_USERS, False),
    ("preparer", "Paul", "Preparer", roles.PREPARERS, False),
    ("approver", "Alice", "Approver", roles.APPROVERS, False),
    ("ops", "Omar", "Ops", roles.DELIVERY_SUPERVISORS, False),
]


class Command(BaseCommand):
    help = "Create the demo users and data that are missing (running it again changes nothing, not even a changed password)."
    demo_deliveries: list[int]  # the messages this run made: the only ones the other apps' demo data touches

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true")

    @transaction.atomic
    def seed_users(self):
        """Create the demo users that are missing. A user who exists is left as it is: a password
        someone changed stays changed, superuser status and groups an administrator took away are
        not granted again at the next start."""
        User = get_user_model()
        for login, first, last, group, staff in DEMO_USERS:
            if User.objects.filter(username=login).exists():
                continue
            user = User(username=login, first_name=first, last_name=last, email=f"{login}@dispatch.localhost")
            user.set_password(settings.DEMO_PASSWORD)
            user.is_staff = user.is_superuser = staff
            user._audit_source = "seed"
            user.save()
            user.groups.set([Group.objects.get(name=group)])

    def handle(self, *args, quiet=False, **options):
        self.demo_deliveries = []
        with transaction.atomic():  # all or nothing: a run that fails leaves no half-made demo behind
            self.seed_users()
            for step in self.extra_steps():
                step(self)
        if not quiet:
            self.stdout.write(self.style.SUCCESS("Demo data ready."))
            self.stdout.write(f"Demo logins (password: {settings.DEMO_PASSWORD!r}):")
            for login, _f, _l, group, _s in DEMO_USERS:
                self.stdout.write(f"  {login:<10} {group}")

    def extra_steps(self):
        """Each app's `demo.seed(command)`, in dependency order (apps without one are passed over)."""
        steps = []
        for app in ("audiences", "deliveries", "tracking", "kpis", "ops"):
            try:
                module = importlib.import_module(f"{app}.demo")
            except ModuleNotFoundError as e:
                if e.name != f"{app}.demo":
                    raise
                continue
            steps.append(module.seed)
        return steps
