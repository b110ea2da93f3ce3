"""Demo data for audiences (called by `manage.py seed_demo`): idempotent, a few bulk statements.

5,000 profiles with varied names, languages and time zones (addresses on example.* domains, which
never receive mail), among them a few invalid addresses, legacy duplicates (same address in
another case, kept from an older system: their `email_key` is empty so the unique key does not
merge them, and preparation excludes them as Duplicate), denylisted profiles and quarantined
addresses; three audiences: two lists and a filter.
"""

import random
import unicodedata
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .emails import email_key
from .models import Audience, AudienceMember, Profile, Quarantine

COUNT = 5000
PEOPLE = {
    # language: (time zones, first names, last names)
    "fr": (["Europe/Paris", "America/Montreal", "Europe/Brussels"],
           ["Camille", "Léa", "Hugo", "Chloé", "Louis", "Inès", "Jules", "Manon", "Théo", "Zoé"],
           ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy", "Moreau", "Lefèvre"]),
    "en": (["Europe/London", "America/New_York", "America/Los_Angeles", "Australia/Sydney"],
           ["Olivia", "Jack", "Amelia", "Harry", "Emily", "George", "Ava", "Noah", "Grace", "Oscar"],
           ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Evans", "O'Brien"]),
    "de": (["Europe/Berlin", "Europe/Vienna", "Europe/Zurich"],
           ["Lukas", "Mia", "Leon", "Hannah", "Felix", "Lena", "Jonas", "Marie", "Paul", "Sophie"],
           ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Schäfer"]),
    "es": (["Europe/Madrid", "America/Mexico_City", "America/Bogota"],
           ["Lucía", "Hugo", "Martina", "Mateo", "Sofía", "Leo", "Valeria", "Pablo", "Julia", "Álvaro"],
           ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Ruiz"]),
    "ja": (["Asia/Tokyo"],
           ["Haruto", "Yui", "Sota", "Hina", "Riku", "Aoi", "Yuto", "Mei", "Kaito", "Sakura"],
           ["Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura", "Kobayashi", "Kato"]),
    "pt-BR": (["America/Sao_Paulo"],
              ["Miguel", "Helena", "Arthur", "Alice", "Heitor", "Laura", "Davi", "Valentina", "Gael", "Manuela"],
              ["Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima", "Gomes"]),
    "it": (["Europe/Rome"],
           ["Leonardo", "Sofia", "Francesco", "Aurora", "Tommaso", "Giulia", "Edoardo", "Ginevra", "Matteo", "Beatrice"],
           ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco"]),
}
WEIGHTS = {"fr": 30, "en": 30, "de": 12, "es": 12, "ja": 5, "pt-BR": 6, "it": 5}
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "shop.example.org"]
TIERS = ["gold", "silver", "bronze", "bronze", "", ""]
INVALID = ["jean.dupont@@example.com", "no-at-sign.example.org", "trailing.dot@example.com.", "space in@example.net"]
QUARANTINED = {  # index of a demo profile -> (status, error count, reason, text)
    7: ("quarantine", 1, "user_unknown", "550 5.1.1 <{a}>: Recipient address rejected: User unknown"),
    19: ("quarantine", 1, "user_unknown", "550 5.1.1 User unknown"),
    42: ("quarantine", 5, "mailbox_full", "452 4.2.2 Mailbox full"),
    77: ("erroneous", 2, "mailbox_full", "452 4.2.2 Over quota"),
    99: ("erroneous", 1, "unreachable", "421 4.4.2 Connection timed out"),
    123: ("denylist", 0, "refused", "Spam complaint (feedback loop)"),
    321: ("valid", 0, "", ""),
}
DENYLISTED = (11, 222, 333)
# The demo's audiences, by name: the other apps' demo data uses these, never a user's audiences.
NEWSLETTER, VIP, FRENCH_FILTER = "Newsletter subscribers", "VIP customers", "French speakers, gold or silver"
DEMO_AUDIENCES = (NEWSLETTER, VIP, FRENCH_FILTER)


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _profiles(rnd: random.Random, now):
    langs = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in langs]
    rows = []
    for i in range(COUNT):
        lang = rnd.choices(langs, weights)[0]
        zones, firsts, lasts = PEOPLE[lang]
        first, last = rnd.choice(firsts), rnd.choice(lasts)
        local = _ascii(f"{first}.{last}").replace("'", "").replace(" ", "")
        if i % 9:  # some people type their address with capitals: the local part is kept as given
            local = local.lower()
        address = f"{local}{i}@{DOMAINS[i % len(DOMAINS)]}"
        rows.append(
            Profile(
                email=address,
                email_key=email_key(address),
                phone=f"+3361{i:07d}" if i % 3 == 0 else "",
                first_name=first,
                last_name=last,
                language=lang,
                time_zone=rnd.choice(zones),
                attributes={
                    k: v
                    for k, v in {
                        "loyalty_tier": rnd.choice(TIERS),
                        "city": rnd.choice(["Paris", "Lyon", "London", "Berlin", "Madrid", "Tokyo", "São Paulo", "Rome", "Montréal"]),
                        "signup_date": (now - timedelta(days=rnd.randint(1, 1500))).date().isoformat(),
                    }.items()
                    if v
                },
                email_denylisted=i in DENYLISTED,
                created_at=now,
                updated_at=now,
            )
        )
    return rows


@transaction.atomic
def seed(command=None) -> None:
    if Audience.objects.filter(name=NEWSLETTER).exists():  # seeded before: a second run changes nothing
        return
    rnd = random.Random(20260301)
    now = timezone.now()
    profiles = _profiles(rnd, now)
    Profile.objects.bulk_create(profiles, batch_size=1000, ignore_conflicts=True)

    # A few invalid addresses (kept as typed: preparation excludes them as Invalid address syntax).
    invalid = [Profile(email=a, email_key=a.lower(), first_name="Typo", last_name=f"Case {n}", language="en",
                       time_zone="Europe/London") for n, a in enumerate(INVALID, start=1)]
    Profile.objects.bulk_create(invalid, ignore_conflicts=True)
    # Legacy duplicates: the same address as an existing profile in another case, without a key.
    dup_sources = [profiles[i] for i in (5, 50, 500)]
    dup_emails = [p.email.split("@")[0].upper() + "@" + p.email.split("@")[1] for p in dup_sources]
    existing_dups = set(Profile.objects.filter(email__in=dup_emails, email_key__isnull=True).values_list("email", flat=True))
    Profile.objects.bulk_create(
        [Profile(email=e, email_key=None, first_name=p.first_name, last_name=p.last_name, language=p.language,
                 time_zone=p.time_zone, attributes={"legacy": "yes"})
         for p, e in zip(dup_sources, dup_emails, strict=True) if e not in existing_dups]
    )

    Quarantine.objects.bulk_create(
        [Quarantine(address=profiles[i].email_key, channel="email", status=status, error_count=count, reason=reason,
                    text=text.format(a=profiles[i].email_key), last_error_at=now - timedelta(days=2) if count else None)
         for i, (status, count, reason, text) in QUARANTINED.items()],
        ignore_conflicts=True,
    )

    keys = [p.email_key for p in profiles]
    ids = dict(Profile.objects.filter(email_key__in=keys).values_list("email_key", "id"))
    newsletter, _c = Audience.objects.get_or_create(
        name=NEWSLETTER, defaults={"kind": Audience.Kind.LIST, "description": "Everyone who asked for the monthly newsletter (demo)."}
    )
    vip, _c = Audience.objects.get_or_create(
        name=VIP, defaults={"kind": Audience.Kind.LIST, "description": "Hand-picked best customers (demo)."}
    )
    Audience.objects.get_or_create(
        name=FRENCH_FILTER,
        defaults={
            "kind": Audience.Kind.FILTER,
            "description": "Profiles in French whose loyalty tier is gold or silver (demo filter).",
            "conditions": {"op": "and", "conditions": [
                {"field": "language", "operator": "equals", "value": "fr"},
                {"field": "attributes__loyalty_tier", "operator": "in", "value": ["gold", "silver"]},
            ]},
        },
    )
    members = [AudienceMember(audience=newsletter, profile_id=ids[k]) for n, k in enumerate(keys) if n % 5 != 4 and k in ids]
    members += [AudienceMember(audience=newsletter, profile_id=i)
                for i in Profile.objects.filter(email__in=INVALID + dup_emails).values_list("id", flat=True)]
    members += [AudienceMember(audience=vip, profile_id=ids[k]) for n, k in enumerate(keys) if n % 40 == 7 and k in ids]
    AudienceMember.objects.bulk_create(members, batch_size=2000, ignore_conflicts=True)
    if command is not None and hasattr(command, "stdout"):
        command.stdout.write(f"Audiences: {Profile.objects.count():,} profiles, {Audience.objects.count()} audiences, "
                             f"{Quarantine.objects.count()} quarantine rows.")
