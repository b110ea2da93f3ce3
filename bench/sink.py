"""A fast discarding SMTP sink for benchmarks: accepts everything, counts messages, keeps nothing.

    python bench/sink.py --port 2525
"""

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402


class Counter:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


class FastController(Controller):
    def factory(self):
        return SMTP(self.handler, decode_data=False, data_size_limit=10 * 1024 * 1024, hostname="bench-sink")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args()
    handler = Counter()
    controller = FastController(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"sink ready on 127.0.0.1:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    controller.stop()
    print(f"sink received {handler.count} messages", flush=True)


if __name__ == "__main__":
    main()
