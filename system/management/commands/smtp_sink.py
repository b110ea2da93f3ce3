import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from system.smtp import RecordingHandler, start_sink


class Command(BaseCommand):
    help = "Run the local SMTP sink: keeps every message under MAILBOX_DIR (see /dev/mailbox/)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=1025)

    def handle(self, *args, host, port, **options):
        handler = RecordingHandler(mailbox_dir=settings.MAILBOX_DIR, keep_in_memory=False)
        controller = start_sink(handler, host=host, port=port)
        self.stdout.write(f"SMTP sink on {host}:{port}, keeping messages in {settings.MAILBOX_DIR}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        signal.signal(signal.SIGINT, lambda *a: stop.set())
        stop.wait()
        controller.stop()
