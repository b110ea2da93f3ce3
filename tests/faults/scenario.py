"""The fault suite's hands inside the app: run as a subprocess with DATABASE_URL (and the other
settings) pointing at the suite's private services.

    python tests/faults/scenario.py setup --recipients 3000     # prints {"delivery": id}
    python tests/faults/scenario.py confirm --delivery ID
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

HTML = (
    "<html><body><p>Hello {{ first_name|default('friend') }}, {{ attributes.plan|default('basic') }}.</p>"
    '<p><a href="https://shop.example.com/offer">See the offer</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


def setup(recipients: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection

    from accounts.roles import STANDARD_USERS
    from audiences.models import Audience
    from deliveries.models import Delivery, State
    from deliveries.services import delivery_create, delivery_prepare_run

    user, _ = get_user_model().objects.get_or_create(username="faults", defaults={"first_name": "Fault", "last_name": "Suite"})
    user.groups.set([Group.objects.get(name=STANDARD_USERS)])
    audience = Audience.objects.create(name=f"Faults {recipients}", kind=Audience.Kind.LIST)
    tag = os.urandom(4).hex()
    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO audiences_profile (email, email_key, phone, first_name, last_name, language, time_zone,
                   attributes, email_denylisted, sms_denylisted, created_at, updated_at)
               SELECT 'f' || %s || '.' || g || '@faults.example.com', 'f' || %s || '.' || g || '@faults.example.com', '',
                      'First' || g, 'Last' || g, 'en', 'UTC', '{}'::jsonb, false, false, now(), now()
               FROM generate_series(1, %s) g""",
            [tag, tag, recipients],
        )
        cur.execute(
            "INSERT INTO audiences_audiencemember (audience_id, profile_id, added_at) "
            "SELECT %s, id, now() FROM audiences_profile WHERE email_key LIKE %s",
            [audience.pk, f"f{tag}.%"],
        )
    d = delivery_create(user=user, data={"label": "Fault run", "sender_name": "Shop", "sender_address": "news@shop.example.com",
                                         "subject": "Hi {{ first_name }}", "html": HTML, "audience": audience})  # fmt: skip
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)
    d.refresh_from_db()
    assert d.state == State.READY, d.state
    return {"delivery": d.pk}


def confirm(delivery_id: int) -> dict:
    from django.contrib.auth import get_user_model

    from deliveries.models import Delivery
    from deliveries.services import delivery_confirm

    d = delivery_confirm(delivery=Delivery.objects.get(pk=delivery_id), user=get_user_model().objects.get(username="faults"))
    return {"state": d.state}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["setup", "confirm"])
    parser.add_argument("--recipients", type=int, default=3000)
    parser.add_argument("--delivery", type=int)
    args = parser.parse_args()
    import django

    django.setup()
    result = setup(args.recipients) if args.what == "setup" else confirm(args.delivery)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
