import json
from datetime import UTC, datetime
from email import message_from_bytes, policy

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_sameorigin

from accounts.decorators import allowed

# The local mailbox holds every message the app sent (personal data): administrators only. Anyone
# else gets the app's 403 page naming the role (not the Django admin's login).
mailbox_required = allowed("administer")


def _index() -> list[dict]:
    path = settings.MAILBOX_DIR / "index.jsonl"
    if not path.exists():
        return []
    with open(path) as fh:
        entries = [json.loads(line) for line in fh if line.strip()]
    for entry in entries:
        if isinstance(entry.get("at"), int | float):  # the sink writes a Unix timestamp
            entry["at"] = datetime.fromtimestamp(entry["at"], tz=UTC)
    entries.reverse()
    return entries


def _load(name: str) -> bytes:
    if "/" in name or "\\" in name or not name.endswith(".eml"):
        raise Http404("No such message.")
    path = settings.MAILBOX_DIR / name
    if not path.is_file():
        raise Http404("No such message.")
    return path.read_bytes()


@mailbox_required
def mailbox(request):
    page = Paginator(_index(), 50).get_page(request.GET.get("page"))
    return render(request, "system/mailbox.html", {"page": page, "mailbox_dir": settings.MAILBOX_DIR})


@mailbox_required
def mailbox_message(request, name: str):
    raw = _load(name)
    msg = message_from_bytes(raw, policy=policy.default)
    text = msg.get_body(preferencelist=("plain",))
    return render(
        request,
        "system/message.html",
        {
            "name": name,
            "msg": msg,
            "headers": list(msg.items()),
            "text": text.get_content() if text else "",
            "has_html": msg.get_body(preferencelist=("html",)) is not None,
            "raw": raw.decode("utf-8", errors="replace"),
        },
    )


@mailbox_required
@xframe_options_sameorigin
def mailbox_html(request, name: str):
    msg = message_from_bytes(_load(name), policy=policy.default)
    body = msg.get_body(preferencelist=("html",))
    if body is None:
        raise Http404("This message has no HTML part.")
    response = HttpResponse(body.get_content())
    # The message is shown in a sandboxed iframe; its scripts never run.
    response["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src * data:; style-src 'unsafe-inline'"
    return response
