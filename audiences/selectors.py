"""Reads of the audiences app: profiles, audiences (lists and filters), quarantine, imports."""

from collections.abc import Iterable

from django.db.models import Count, F, Q, QuerySet
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.errors import NotFound
from accounts.selectors import require_access

from .conditions import conditions_to_q
from .models import Audience, Channel, ImportJob, Profile, Quarantine

# Statuses that keep an address out of a send (preparation excludes them).
QUARANTINE_BLOCKING = (Quarantine.Status.QUARANTINE, Quarantine.Status.DENYLIST)


def audience_profiles(*, audience: Audience, ids: tuple[int, int] | None = None) -> QuerySet[Profile]:
    """The profiles of an audience, as a queryset (never loaded into Python here).

    A list is its members; a filter is its conditions evaluated in SQL. Usable in a subquery
    (`.values("id")`) and with further filters. `ids` = (lo, hi): only profiles lo <= id < hi,
    read through the list's (audience, profile) index rather than every member of the list.
    """
    if audience.kind == Audience.Kind.FILTER:
        q, aliases = conditions_to_q(audience.conditions)
        profiles = Profile.objects.alias(**aliases).filter(q)
        return profiles if ids is None else profiles.filter(id__gte=ids[0], id__lt=ids[1])
    if ids is None:
        return Profile.objects.filter(memberships__audience_id=audience.pk)
    # One filter() call: the range applies to the same membership join (PostgreSQL does not carry
    # an inequality across the join's equality by itself).
    return Profile.objects.filter(
        memberships__audience_id=audience.pk, memberships__profile_id__gte=ids[0], memberships__profile_id__lt=ids[1],
        id__gte=ids[0], id__lt=ids[1],
    )  # fmt: skip


def audience_count(*, audience: Audience) -> int:
    return audience_profiles(audience=audience).order_by().count()


def conditions_count(*, conditions) -> int:
    """How many profiles match unsaved conditions (the live count of the condition builder)."""
    q, aliases = conditions_to_q(conditions)
    return Profile.objects.alias(**aliases).filter(q).order_by().count()


def audience_sample(*, audience: Audience, limit: int = 20) -> list[Profile]:
    return list(audience_profiles(audience=audience).order_by("id")[:limit])


def audience_list() -> QuerySet[Audience]:
    """Audiences with their list size (filters are counted on their detail page)."""
    return Audience.objects.select_related("created_by").annotate(member_count=Count("memberships")).order_by("name", "id")


def filter_audience_counts(*, audiences: Iterable[Audience]) -> dict[int, int]:
    """{audience id: profiles matching} for the filter audiences among `audiences`, in one query
    (one conditional COUNT per filter). A filter whose stored conditions no longer read is left out."""
    aliases, counts = {}, {}
    for a in audiences:
        if a.kind != Audience.Kind.FILTER:
            continue
        try:
            q, more = conditions_to_q(a.conditions)
        except Exception:  # a condition tree saved before a rule changed: counted on its page
            continue
        aliases.update(more)  # an attribute's alias is the same expression in every filter
        counts[f"a{a.pk}"] = Count("id", filter=q)
    if not counts:
        return {}
    row = Profile.objects.alias(**aliases).aggregate(**counts)
    return {int(key[1:]): n for key, n in row.items()}


PROFILE_NOT_FOUND = gettext_noop("There is no profile %(pk)s: it may have been deleted.")
AUDIENCE_NOT_FOUND = gettext_noop("There is no audience %(pk)s: it may have been deleted.")
IMPORT_NOT_FOUND = gettext_noop("There is no import %(pk)s: check its number.")


def _get(queryset, *, pk, user, not_found: str):
    require_access(user=user, action="read")
    try:
        return queryset.get(pk=pk)
    except queryset.model.DoesNotExist:
        raise NotFound(_(not_found) % {"pk": pk}) from None


def audience_get(*, pk, user) -> Audience:
    """The audience `pk`, for `user`: the one fetch of an audience by the pages, the API and the
    partials. PermissionDenied unless `user` may read audiences (any role); NotFound (a 404 with
    its sentence) when there is none."""
    return _get(Audience.objects.select_related("created_by"), pk=pk, user=user, not_found=AUDIENCE_NOT_FOUND)


def profile_list(*, search: str = "") -> QuerySet[Profile]:
    """Profiles, optionally searched by email or name (each word must match one of them)."""
    qs = Profile.objects.all()
    for word in (search or "").split()[:5]:
        # email_key is lower-cased already: a plain LIKE, no UPPER() per row.
        if "@" in word:
            qs = qs.filter(email_key__contains=word.lower())
        else:
            qs = qs.filter(
                Q(email_key__contains=word.lower()) | Q(first_name__icontains=word) | Q(last_name__icontains=word)
            )
    return qs.order_by("id")


def profile_get(*, pk, user) -> Profile:
    """The profile `pk`, for `user`: the one fetch of a profile by the pages, the API and the
    partials (the profile's message history). PermissionDenied unless `user` may read profiles (any
    role); NotFound (a 404 with its sentence) when there is none."""
    return _get(Profile.objects.all(), pk=pk, user=user, not_found=PROFILE_NOT_FOUND)


def profile_audiences(*, profile: Profile) -> QuerySet[Audience]:
    """The list audiences a profile belongs to."""
    return Audience.objects.filter(memberships__profile=profile).order_by("name")


def quarantined_addresses(*, channel: str = Channel.EMAIL, statuses: Iterable[str] = QUARANTINE_BLOCKING) -> QuerySet:
    """Lower-cased addresses of `channel` whose quarantine status is one of `statuses`.

    A `values("address")` queryset meant for a subquery, e.g.
    `profiles.exclude(email_key__in=quarantined_addresses(channel="email", statuses=[...]))`.
    """
    return Quarantine.objects.filter(channel=channel, status__in=list(statuses)).values("address")


def quarantine_status_of(*, addresses: Iterable[str], channel: str = Channel.EMAIL) -> dict[str, str]:
    """{lower-cased address: status} for the given addresses that have a quarantine row."""
    keys = {a.strip().lower() for a in addresses if a}
    return dict(Quarantine.objects.filter(channel=channel, address__in=keys).values_list("address", "status"))


def quarantine_list(*, status: str = "", channel: str = "", address: str = "") -> QuerySet[Quarantine]:
    qs = Quarantine.objects.all()
    if status:
        qs = qs.filter(status=status)
    if channel:
        qs = qs.filter(channel=channel)
    if address:
        qs = qs.filter(address__contains=address.strip().lower())
    return qs.order_by(F("last_error_at").desc(nulls_last=True), "address")


def quarantine_totals() -> dict[str, int]:
    """Rows per status (every channel), for the quarantine page's summary."""
    return dict(Quarantine.objects.order_by().values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def import_list(*, user=None) -> QuerySet[ImportJob]:
    qs = ImportJob.objects.select_related("audience", "created_by").order_by("-created_at", "-id")
    return qs.filter(created_by=user) if user is not None else qs


def import_get(*, pk, user) -> ImportJob:
    """The import `pk`, for `user`: the one fetch of an import job by the pages and the API.
    PermissionDenied unless `user` may read imports (any role); NotFound (a 404 with its sentence)."""
    return _get(ImportJob.objects.select_related("audience", "created_by"), pk=pk, user=user, not_found=IMPORT_NOT_FOUND)
