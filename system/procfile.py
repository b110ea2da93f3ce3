"""Run the processes of the Procfile side by side (`make run`), and stop them all cleanly on Ctrl-C.

    python -m system.procfile [name ...]      # every process, or only those named

Each process runs in its own session, its output prefixed with its name. Ctrl-C (or SIGTERM)
sends SIGTERM to each process itself, never to its process group: a Celery worker then makes its
warm shutdown and stops its own pool (signalled one by one, the pool's processes would die first
and the worker log errors about them). Every process of the Procfile exits 0 on SIGTERM, so a clean
stop exits 0. Whatever is still running after GRACE_SECONDS is killed, and the exit code says so.

Ctrl-C in a terminal signals the terminal's foreground process group, which includes `make`:
make would report "Interrupt" and exit 130 whatever its recipe does. So when it runs on a
terminal, this runner takes the terminal's foreground for its own process group (as a shell does
for a job) and gives it back when it ends: Ctrl-C reaches the runner alone, which stops the
processes; make then sees a recipe that succeeded. A second Ctrl-C kills what still runs.

No Django here: it only starts processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

GRACE_SECONDS = 30
ROOT = Path(__file__).resolve().parent.parent


def read_procfile(path: Path) -> list[tuple[str, str]]:
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, command = line.split(":", 1)
        entries.append((name.strip(), command.strip()))
    return entries


class Runner:
    def __init__(self, entries: list[tuple[str, str]], *, out=sys.stdout, grace: float = GRACE_SECONDS):
        self.entries = entries
        self.out = out
        self.grace = grace
        self.width = max(len(f"{name}.1") for name, _ in entries)
        self.lock = threading.RLock()
        self.procs: dict[str, subprocess.Popen] = {}
        self.readers: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.forced = False
        self.signals = 0

    def say(self, name: str, text: str) -> None:
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            self.out.flush()

    def start(self) -> None:
        for name, command in self.entries:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],  # exec: the signal reaches the program, not a shell
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, text=True, errors="replace", bufsize=1,
            )  # fmt: skip
            self.procs[name] = proc
            self.say("system", f"{name}.1 started (pid={proc.pid})")
            reader = threading.Thread(target=self._relay, args=(f"{name}.1", proc), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _relay(self, label: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.say(label, line.rstrip("\n"))

    def on_signal(self, signum=None, frame=None) -> None:
        """Ctrl-C or SIGTERM: only counted here (a handler interrupts the main thread anywhere,
        maybe while it prints); the main loop acts on it."""
        self.signals += 1

    def request_stop(self) -> None:
        self.stopping.set()
        self.say("system", "Stopping every process (Ctrl-C again to kill them now)…")
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def kill(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.say("system", f"{name}.1 did not stop: killed")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def wait(self) -> int:
        """Until every process ended; the exit code of the run."""
        deadline = None
        first_failure = None
        reported = set()
        while True:
            if self.signals and not self.stopping.is_set():
                self.request_stop()
            if self.signals > 1 and not self.forced:  # a second Ctrl-C: no more waiting
                self.forced = True
                self.kill()
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is None or name in reported:
                    continue
                reported.add(name)
                if not self.stopping.is_set():
                    self.say("system", f"{name}.1 exited by itself (code {code}): stopping the others")
                    first_failure = code or 1
                    self.request_stop()
                elif code != 0:
                    self.say("system", f"{name}.1 stopped with code {code}")
                    first_failure = first_failure or code
            if len(reported) == len(self.procs):
                break
            if self.stopping.is_set():
                deadline = deadline or time.monotonic() + self.grace
                if time.monotonic() > deadline:
                    self.forced = True
                    self.kill()
                    deadline = time.monotonic() + 5
            time.sleep(0.05)
        for reader in self.readers:
            reader.join(timeout=2)
        if self.forced:
            return 1
        if first_failure is not None:
            return first_failure if first_failure > 0 else 1
        self.say("system", "Every process stopped.")
        return 0


class Foreground:
    """Own the terminal's foreground while running, so that Ctrl-C reaches this process group only."""

    def __init__(self):
        self.fd = None
        self.previous = None

    def __enter__(self):
        try:
            fd = sys.stdin.fileno()
            if not os.isatty(fd):
                return self
            previous = os.tcgetpgrp(fd)
            os.setpgid(0, 0)
            with _ignoring(signal.SIGTTOU):  # a background group may not take the terminal otherwise
                os.tcsetpgrp(fd, os.getpgrp())
            self.fd, self.previous = fd, previous
        except (OSError, ValueError):
            pass  # not a terminal we can take: Ctrl-C still works, make reports it
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                with _ignoring(signal.SIGTTOU):
                    os.tcsetpgrp(self.fd, self.previous)
            except OSError:
                pass


class _ignoring:
    def __init__(self, signum):
        self.signum = signum

    def __enter__(self):
        self.old = signal.signal(self.signum, signal.SIG_IGN)

    def __exit__(self, *exc):
        signal.signal(self.signum, self.old)


def main(argv: list[str]) -> int:
    entries = read_procfile(ROOT / "Procfile")
    if argv:
        unknown = set(argv) - {name for name, _ in entries}
        if unknown:
            print(f"No such process in the Procfile: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        entries = [(name, command) for name, command in entries if name in argv]
    runner = Runner(entries)
    with Foreground():
        signal.signal(signal.SIGINT, runner.on_signal)
        signal.signal(signal.SIGTERM, runner.on_signal)
        runner.start()
        return runner.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
