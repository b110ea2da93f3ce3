from django.core.management.base import BaseCommand

from ops.services import processed_hours_backfill


class Command(BaseCommand):
    help = (
        "Rebuild the hourly counter of messages processed (the deployment dashboard's chart) from the "
        "sending logs: once, for sends made before the ops app was installed. One GROUP BY over the logs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--delivery", type=int, action="append", help="only this message id (repeatable)")

    def handle(self, *args, delivery=None, **options):
        rows = processed_hours_backfill(delivery_ids=delivery)
        self.stdout.write(self.style.SUCCESS(f"{rows} hourly row(s) written."))
