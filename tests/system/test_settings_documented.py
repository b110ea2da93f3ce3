"""Every setting the README's table lists is read (by the settings module, the Makefile or the
Procfile), and every variable the settings module reads is in that table. A documented setting that
nothing reads (RECONCILE_AFTER_SECONDS was one) is a promise the app does not keep."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RECORD = r"""
import json, os, sys
read = set()
config = os.path.join(sys.argv[1], "config") + os.sep
def note(key):
    if sys._getframe(2).f_code.co_filename.startswith(config):  # read by our settings, not by a library
        read.add(key)
class Recorder(dict):
    def get(self, key, default=None):
        note(key); return super().get(key, default)
    def __getitem__(self, key):
        note(key); return super().__getitem__(key)
    def __contains__(self, key):
        note(key); return super().__contains__(key)
os.environ = Recorder(os.environ)
sys.path.insert(0, sys.argv[1])
import config.settings  # noqa
print(json.dumps(sorted(read)))
"""


def settings_reads(env: dict) -> set[str]:
    """The environment variables config/settings.py reads, imported fresh with `env`."""
    out = subprocess.run([sys.executable, "-c", RECORD, str(ROOT)], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_the_readme_settings_table_and_what_settings_read_are_the_same(tmp_path):
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")} | {"VAR_DIR": str(tmp_path)}
    production = base | {"DEBUG": "0", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "example.com",
                         "DATABASE_URL": "postgres://u@127.0.0.1:5432/x", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}  # fmt: skip
    read = settings_reads(base) | settings_reads(production)
    build = (ROOT / "Makefile").read_text() + (ROOT / "Procfile").read_text()
    used_by_build = set(re.findall(r"\$[({]([A-Z][A-Z0-9_]+)", build)) | set(re.findall(r"^([A-Z][A-Z0-9_]+)\s*\?=", build, re.M))
    documented = readme_table()
    assert documented, "the README has no settings table"
    never_read = documented - read - used_by_build
    assert not never_read, f"documented in the README but read by nothing: {sorted(never_read)}"
    undocumented = read - documented - {"DJANGO_SETTINGS_MODULE"}
    assert not undocumented, f"read by settings but missing from the README's table: {sorted(undocumented)}"
