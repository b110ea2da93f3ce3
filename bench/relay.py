"""A discarding SMTP relay for benchmarks, with network latency and a connection cap.

    python bench/relay.py --port 2526 --delay-ms 10 --max-conns 50

- Every reply waits `--delay-ms` before it is written, as a relay across a network does: the
  delay is one round trip, so the replies to commands that arrived together (an RFC 2920 pipelined
  group: MAIL, RCPT, DATA) come back together after one delay; a client that waits for each reply
  pays one delay per command.
- Beyond `--max-conns` open connections, a new connection is answered `421 4.7.0 Too many
  connections from your host` and closed (Postfix's smtpd_client_connection_count_limit).
- It advertises PIPELINING (unless `--no-pipelining`), accepts every message and keeps nothing.
  An asyncio Protocol, not a full SMTP server: a few microseconds of CPU per command, so the relay
  itself is never what limits a benchmark (it prints its own CPU time at the end).

Prints "relay ready on 127.0.0.1:PORT" when listening and, on SIGTERM, the messages received,
connections refused and its CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal

END = b"\r\n.\r\n"


class Stats:
    messages = 0
    connections = 0
    refused = 0
    open = 0


class RelayProtocol(asyncio.Protocol):
    def __init__(self, args, stats: Stats):
        self.args, self.stats = args, stats
        self.delay = args.delay_ms / 1000
        self.buf = b""
        self.in_data = False
        self.out: list[bytes] = []
        self.flush_handle = None
        self.transport = None
        self.closing = False

    def connection_made(self, transport):
        self.transport = transport
        self.stats.connections += 1
        if self.stats.open >= self.args.max_conns:
            self.stats.refused += 1
            self.closing = True
            self.reply(b"421 4.7.0 Too many connections from your host\r\n")
            return
        self.stats.open += 1
        self.counted = True
        self.reply(b"220 bench-relay ESMTP\r\n")

    counted = False

    def connection_lost(self, exc):
        if self.counted:
            self.stats.open -= 1
        if self.flush_handle:
            self.flush_handle.cancel()

    def reply(self, line: bytes) -> None:
        self.out.append(line)
        if self.delay <= 0:
            self.flush()
        elif self.flush_handle is None:
            self.flush_handle = asyncio.get_running_loop().call_later(self.delay, self.flush)

    def flush(self) -> None:
        self.flush_handle = None
        if self.out and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()
        if self.closing:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        while True:
            if self.in_data:
                end = self.buf.find(END)
                if end < 0:
                    self.buf = self.buf[-4:]  # keep only what may start the terminator
                    return
                self.buf = self.buf[end + len(END) :]
                self.in_data = False
                self.stats.messages += 1
                self.reply(b"250 2.0.0 Ok: queued\r\n")
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                return
            line, self.buf = self.buf[:nl], self.buf[nl + 2 :]
            verb = line[:4].upper()
            if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.buf = b"\r\n" + self.buf  # the line break before the data: an empty message ends at once
                self.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                # the content may follow in the same segment (`buf` holds it): the loop goes on
            elif verb in (b"EHLO", b"HELO"):
                extensions = [b"250-bench-relay", b"250-SIZE 52428800", b"250-8BITMIME"]
                if self.args.pipelining:
                    extensions.append(b"250-PIPELINING")
                self.reply(b"\r\n".join(extensions) + b"\r\n250 SMTPUTF8\r\n")
            elif verb == b"QUIT":
                self.closing = True
                self.reply(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.reply(b"502 5.5.2 Command not recognized\r\n")


async def main_async(args) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelayProtocol(args, stats), "127.0.0.1", args.port, backlog=1024)
    print(f"relay ready on 127.0.0.1:{args.port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"relay received {stats.messages} messages over {stats.connections} connections "
          f"({stats.refused} refused), CPU {usage.ru_utime + usage.ru_stime:.2f} s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=2526)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--max-conns", type=int, default=50)
    parser.add_argument("--no-pipelining", dest="pipelining", action="store_false")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
