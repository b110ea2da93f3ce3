import signal
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "The web server of `make run` (runserver without the reloader) that stops cleanly on SIGTERM too."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        # runserver stops quietly on Ctrl-C (SIGINT); SIGTERM, which the process runner of
        # `make run` sends, would kill it outright. Exit the same way: atexit hooks run (the
        # tracking buffer writes the hits it holds) and the exit code is 0.
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        call_command("runserver", addrport, use_reloader=False)
