"""One factory_boy factory per model: rows as the app would hold them, inserted directly (never
through the services, which the tests exercise on purpose). `Factory(...)` saves one row,
`Factory.create_batch(n, ...)` n rows, `Factory.build(...)` an unsaved one (for bulk_create).

The shared builders of tests/conftest.py (`make_delivery`, `add_logs`) are made of these."""

from datetime import timedelta
from itertools import count

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from accounts.models import RoleAuditLog
from audiences.models import (
    Audience,
    AudienceMember,
    ConsentChange,
    ImportJob,
    ImportRejection,
    Profile,
    Quarantine,
    QuarantineChange,
)
from deliveries.models import (
    ApprovalPolicy,
    ApprovalPolicyChange,
    Delivery,
    ExclusionCause,
    ExclusionLog,
    JournalEntry,
    MessageCategory,
    SendingLog,
    SendingPolicy,
    SendingStatus,
    State,
    TrackedUrl,
)
from kpis.models import KpiSnapshot
from ops.models import Alert, AlertThresholds, Criterion, ProcessedHour
from system.models import Heartbeat
from tracking.models import ProviderEvent, TrackingLog

PASSWORD = "correct-horse-battery"
_addresses = count(1)


def now():
    return timezone.now()


# --- accounts -----------------------------------------------------------------------------------
class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.set([Group.objects.get(name=n) if isinstance(n, str) else n for n in extracted])
        if create:
            self.save()


class RoleAuditLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoleAuditLog

    actor = factory.SubFactory(UserFactory)
    action = RoleAuditLog.Action.MESSAGE_DELETED
    target = "Spring sale (DM1)"


# --- audiences ----------------------------------------------------------------------------------
class ProfileFactory(factory.django.DjangoModelFactory):
    """A profile; `email_key` follows `email` (lower-cased; None without an address) as the app keeps it."""

    class Meta:
        model = Profile

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    email_key = factory.LazyAttribute(lambda p: (p.email or "").strip().lower() or None)
    first_name = factory.Sequence(lambda n: f"First{n}")


class AudienceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Audience

    name = factory.Sequence(lambda n: f"Audience {n}")
    kind = Audience.Kind.LIST


class AudienceMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AudienceMember

    audience = factory.SubFactory(AudienceFactory)
    profile = factory.SubFactory(ProfileFactory)


class QuarantineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Quarantine

    address = factory.Sequence(lambda n: f"q{n}@example.com")
    channel = "email"
    status = Quarantine.Status.QUARANTINE
    last_error_at = factory.LazyFunction(now)


class QuarantineChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QuarantineChange

    address = factory.Sequence(lambda n: f"q{n}@example.com")
    channel = "email"
    action = QuarantineChange.Action.STATUS_CHANGED


class ConsentChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConsentChange

    profile = factory.SubFactory(ProfileFactory)
    address = factory.LazyAttribute(lambda c: c.profile.email if c.profile else "")
    channel = "email"
    denylisted = True


class ImportJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImportJob

    file_name = "people.csv"
    status = ImportJob.Status.PENDING


class ImportRejectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImportRejection

    job = factory.SubFactory(ImportJobFactory)
    line = factory.Sequence(lambda n: n + 2)
    column = "email"
    value = "not an address"
    reason = "The email address is not valid."


# --- deliveries ---------------------------------------------------------------------------------
class MessageCategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MessageCategory
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Category {n}")


class ApprovalPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApprovalPolicy

    require_for_all = False


class ApprovalPolicyChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApprovalPolicyChange

    text = "Approval required for every message."


STARTED = {State.START_PENDING, State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS, State.PAUSED,
           State.STOPPED, State.FAILED, State.FINISHED}  # fmt: skip
ENDED = {State.STOPPED, State.FAILED, State.FINISHED}


class DeliveryFactory(factory.django.DjangoModelFactory):
    """A message in `state`, as the sender leaves it: a send that started has its start time (two
    hours ago), one that ended its end time (an hour ago); the live counters are zero unless given."""

    class Meta:
        model = Delivery

    label = "Spring sale"
    state = State.FINISHED
    sender_name = "Shop"
    sender_address = "news@shop.example.com"
    subject = "Hello {{ first_name|default('friend') }}"
    started_at = factory.LazyAttribute(lambda d: now() - timedelta(hours=2) if d.state in STARTED - {State.START_PENDING} else None)
    finished_at = factory.LazyAttribute(lambda d: now() - timedelta(hours=1) if d.state in ENDED else None)


class JournalEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JournalEntry

    delivery = factory.SubFactory(DeliveryFactory)
    text = factory.Sequence(lambda n: f"Journal line {n}.")
    level = JournalEntry.Level.INFO


class ExclusionLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ExclusionLog

    delivery = factory.SubFactory(DeliveryFactory)
    address = factory.LazyFunction(lambda: f"x{next(_addresses)}@example.com")
    cause = ExclusionCause.DENYLIST


class SendingLogFactory(factory.django.DjangoModelFactory):
    """A recipient's sending log: processed (its `event_at`) 90 minutes ago unless still pending."""

    class Meta:
        model = SendingLog

    delivery = factory.SubFactory(DeliveryFactory)
    address = factory.LazyFunction(lambda: f"r{next(_addresses)}@example.com")
    status = SendingStatus.SENT
    event_at = factory.LazyAttribute(lambda log: None if log.status == SendingStatus.PENDING else now() - timedelta(minutes=90))


class TrackedUrlFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrackedUrl

    delivery = factory.SubFactory(DeliveryFactory)
    url = "https://shop.example.com/sale"
    label = "Sale"
    kind = TrackedUrl.Kind.CLICK


class SendingPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SendingPolicy

    autopause_bounce_rate = 0.2
    autopause_min_processed = 500


# --- tracking -----------------------------------------------------------------------------------
class TrackingLogFactory(factory.django.DjangoModelFactory):
    """A recipient's open (or click…), 30 minutes ago, made by a person unless `is_machine`."""

    class Meta:
        model = TrackingLog

    sending_log = factory.SubFactory(SendingLogFactory)
    delivery = factory.LazyAttribute(lambda t: t.sending_log.delivery)
    kind = TrackingLog.Kind.OPEN
    at = factory.LazyFunction(lambda: now() - timedelta(minutes=30))
    machine_reason = factory.LazyAttribute(lambda t: "Mail scanner" if t.is_machine else "")
    is_machine = False


class ProviderEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderEvent

    esp = "postmark"
    key = factory.Sequence(lambda n: f"event-{n}")
    event_type = "delivered"
    at = factory.LazyFunction(now)
    sending_log = factory.SubFactory(SendingLogFactory)


# --- kpis, ops, system --------------------------------------------------------------------------
class KpiSnapshotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = KpiSnapshot

    delivery = factory.SubFactory(DeliveryFactory)
    computed_at = factory.LazyFunction(now)


class AlertThresholdsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertThresholds

    bounce_rate = 0.05
    bounce_min_processed = 100
    start_pending_minutes = 30
    min_throughput_per_minute = 10


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    delivery = factory.SubFactory(DeliveryFactory)
    criterion = Criterion.BOUNCES
    day = factory.LazyFunction(lambda: timezone.localdate())
    raised_at = factory.LazyFunction(now)
    summary = "Bounces + errors reached 10.0% of 100 processed messages."


class ProcessedHourFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProcessedHour

    delivery = factory.SubFactory(DeliveryFactory)
    hour = factory.LazyFunction(lambda: now().replace(minute=0, second=0, microsecond=0))


class HeartbeatFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Heartbeat
        django_get_or_create = ("name",)

    name = "beat"
    at = factory.LazyFunction(now)
