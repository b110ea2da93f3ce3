"""Email channel: a message skeleton built once per delivery, and the Django backends' transport.

The fast path renders each recipient's parts with templates compiled once (each expression once
for every part), assembles the MIME bytes by hand around headers and boundaries fixed per delivery,
and the engine pushes them over many relay connections (deliveries/channels/smtp.py; Django's
EmailMessage serialization is ~10x slower: DESIGN.md). Django mail backends (console, locmem,
django-anymail for providers' APIs) stay available behind the same interface.
"""

from __future__ import annotations

import binascii
import secrets
import smtplib
from dataclasses import dataclass, field
from email.header import Header
from email.utils import format_datetime, formataddr

from django.conf import settings
from django.utils import timezone

from ..links import RecipientTracking, compile_tracked_html, list_unsubscribe_headers
from ..personalization import compile_content, profile_context, render_with_missing
from ..rendering import flat_renderer
from .base import Outcome, Transport
from .smtp import refused


def _header(value: str) -> str:
    """A header value, RFC 2047-encoded only when it is not plain ASCII."""
    if value.isascii() and "\n" not in value and "\r" not in value:
        return value
    return Header(" ".join(value.split()), "utf-8").encode()


def _addr(name: str, address: str) -> str:
    return formataddr((" ".join(name.split()), address), charset="utf-8") if name else address


def _qp(text: str) -> bytes:
    body = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), quotetabs=False, istext=True, header=False)
    return body.replace(b"\n", b"\r\n")


def _long_lines(text: str) -> bool:
    """A line over 998 characters (RFC 5322's limit)?"""
    return len(text) > 998 and max(map(len, text.split("\n"))) > 998


def _part(content_type: str, text: str, *, eight_bit: bool) -> tuple[bytes, bool]:
    """A MIME part's head and body, and whether it is 8bit. Lines of at most 998 characters go as
    they are: 7bit when ASCII, 8bit UTF-8 otherwise when allowed (RFC 6152: relays that advertise
    8BITMIME, nearly all); quoted-printable otherwise. Encoding is the costliest step of building
    a message, and most messages need none."""
    if "\r" not in text and not _long_lines(text):
        ascii_only = text.isascii()
        if ascii_only or eight_bit:
            encoding = "7bit" if ascii_only else "8bit"
            head = f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n'
            return head.encode() + text.replace("\n", "\r\n").encode("utf-8"), not ascii_only
    head = f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    return head.encode() + _qp(text), False


@dataclass
class BuiltMessage:
    sending_log_id: int
    to: str  # the To: header (name and address)
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    mail_from: str = ""
    missing: set[str] = field(default_factory=set)
    data: bytes = b""  # the wire bytes, made by the skeleton
    address: str = ""  # the envelope recipient (RCPT TO)
    eight_bit: bool = False  # `data` holds an 8bit part: MAIL FROM … BODY=8BITMIME, or `seven_bit()`
    skeleton: MessageSkeleton | None = None

    def as_bytes(self, skeleton: MessageSkeleton, *, eight_bit: bool = False) -> bytes:
        head = [skeleton.fixed_headers, f"To: {self.to}\r\nSubject: {_header(self.subject)}\r\n".encode()]
        head.append("".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode())
        if self.html:
            b = skeleton.boundary
            text, eight_text = _part("text/plain", self.text, eight_bit=eight_bit)
            html, eight_html = _part("text/html", self.html, eight_bit=eight_bit)
            self.eight_bit = eight_text or eight_html
            return b"".join(
                [
                    *head,
                    f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n'.encode(),
                    f"--{b}\r\n".encode(),
                    text,
                    f"\r\n--{b}\r\n".encode(),
                    html,
                    f"\r\n--{b}--\r\n".encode(),
                ]
            )
        text, self.eight_bit = _part("text/plain", self.text, eight_bit=eight_bit)
        return b"".join([*head, text, b"\r\n"])

    def seven_bit(self) -> bytes:
        """The same message with no 8bit part (for a relay without 8BITMIME)."""
        return self.as_bytes(self.skeleton, eight_bit=False)


class MessageSkeleton:
    """Everything about a delivery's messages that does not depend on the recipient."""

    def __init__(self, delivery, url_ids: dict[str, int] | None = None, tracking: bool = True):
        html = delivery.html
        self.tracking = tracking and bool(html)
        if self.tracking:
            if url_ids is None:
                url_ids = dict(delivery.tracked_urls.values_list("url", "id"))
            html = compile_tracked_html(html, url_ids)
        self.compiled = compile_content(subject=delivery.subject, html=html, text=delivery.text)
        if not self.compiled.ok:
            raise ValueError(self.compiled.problems[0].text)
        # Each expression evaluated once per recipient for every part, when the parts allow it.
        self.flat = flat_renderer(subject=delivery.subject, html=html, text=delivery.text)
        self.mail_from = delivery.sender_address
        self.domain = delivery.sender_address.rpartition("@")[2] or "dispatch.localhost"
        self.delivery_id = delivery.pk
        # Random once per skeleton (per batch), not per message: the log id makes each Message-ID
        # unique, the nonce tells a resend (Resend unknown) from the first copy.
        self.renew()
        fixed = [
            f"From: {_addr(delivery.sender_name, delivery.sender_address)}",
            "MIME-Version: 1.0",
            f"X-Dispatch-Delivery: {delivery.human_id}",
        ]
        if delivery.reply_to:
            fixed.append(f"Reply-To: {delivery.reply_to}")
        self.fixed_headers = ("\r\n".join(fixed) + "\r\n").encode()
        self._date_second = None
        self._date = ""

    def renew(self) -> MessageSkeleton:
        """A new nonce (MIME boundary, Message-ID): each batch takes one."""
        nonce = secrets.token_hex(8)
        self.boundary = f"=_dispatch_{nonce}"
        self._message_id = f"{self.delivery_id}.%d.{nonce[:10]}@{self.domain}"
        return self

    def _now_header(self) -> str:
        now = timezone.now().replace(microsecond=0)
        if now != self._date_second:
            self._date_second, self._date = now, format_datetime(now)
        return self._date

    def render(self, ctx: dict) -> tuple[str, str, str, set[str]]:
        """(subject, html, text, missing variables) of one recipient."""
        if self.flat is not None:
            return self.flat.render(ctx)
        subject, m1 = render_with_missing(self.compiled.subject, ctx)
        html, m2 = render_with_missing(self.compiled.html, ctx) if self.compiled.html else ("", set())
        text, m3 = render_with_missing(self.compiled.text, ctx)
        return subject, html, text, m1 | m2 | m3

    def build(self, *, sending_log_id: int, address: str, profile: dict) -> BuiltMessage:
        ctx = profile_context(profile)
        headers = {}
        if self.tracking:
            tracking = _OnceTracking(sending_log_id)
            ctx |= {"tracking": tracking, "unsubscribe_url": tracking.unsubscribe_url, "mirror_url": tracking.mirror_url}
            headers.update(list_unsubscribe_headers(sending_log_id))
        subject, html, text, missing = self.render(ctx)
        message_id = f"<{self._message_id % sending_log_id}>"
        name = " ".join(x for x in (profile.get("first_name"), profile.get("last_name")) if x)
        headers = {"Date": self._now_header(), "Message-ID": message_id, "X-Dispatch-Log": str(sending_log_id), **headers}
        built = BuiltMessage(
            sending_log_id=sending_log_id,
            to=_addr(name, address),
            subject=" ".join(subject.split()),
            html=html,
            text=text,
            headers=headers,
            message_id=message_id,
            mail_from=self.mail_from,
            missing=missing,
            address=address,
            skeleton=self,
        )
        built.data = built.as_bytes(self, eight_bit=True)
        return built


_skeletons: dict[tuple, MessageSkeleton] = {}


def skeleton_for(delivery) -> MessageSkeleton:
    """The delivery's skeleton, compiled once per worker process and prepared revision (compiling
    the templates costs ~30 ms: once per batch, it was a third of a small batch's CPU), with a
    fresh nonce for each batch."""
    import copy

    key = (delivery.pk, delivery.revision, delivery.prepared_at, hash((delivery.subject, delivery.html, delivery.text,
                                                                      delivery.sender_name, delivery.sender_address, delivery.reply_to)))  # fmt: skip
    skeleton = _skeletons.get(key)
    if skeleton is None:
        skeleton = MessageSkeleton(delivery)
        if len(_skeletons) >= 8:
            _skeletons.pop(next(iter(_skeletons)))
        _skeletons[key] = skeleton
    return copy.copy(skeleton).renew()


class _OnceTracking(RecipientTracking):
    """Signs each link once per recipient (the text part repeats the HTML's links)."""

    def click(self, url_id: int) -> str:
        cache = self.__dict__.setdefault("_clicks", {})
        if url_id not in cache:
            cache[url_id] = super().click(url_id)
        return cache[url_id]


class DjangoBackendTransport(Transport):
    """Any Django mail backend (console, locmem, django-anymail providers) behind the same interface.

    The sending log id travels as the X-Dispatch-Log header and as anymail metadata, so provider
    events can be correlated back to the log."""

    def __init__(self, skeleton: MessageSkeleton):
        self.skeleton = skeleton
        self.connection = None

    def open(self) -> None:
        from django.core.mail import get_connection

        self.connection = get_connection(fail_silently=False)
        self.connection.open()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()

    def send(self, message: BuiltMessage) -> Outcome:
        from django.core.mail import EmailMultiAlternatives

        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=self.skeleton.mail_from,
            to=[message.to],
            headers=message.headers,
            connection=self.connection,
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        email.metadata = {"dispatch_log": str(message.sending_log_id)}  # django-anymail
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            return refused(code, text)
        except (OSError, smtplib.SMTPException) as e:
            return Outcome(ok=False, code=0, text=str(e), failure_type="soft", failure_reason="unreachable")
        except Exception as e:  # a provider's API error (anymail): not classified further here
            return Outcome(ok=False, code=0, text=f"{type(e).__name__}: {e}", failure_type="soft", failure_reason="not_defined")
        return Outcome(ok=True)


def uses_smtp_relay() -> bool:
    """The fast path (our asyncio SMTP client, deliveries/channels/smtp.py) serves Django's SMTP
    backend settings; any other backend (console, locmem, django-anymail) goes through Django."""
    return settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"


def transport_for(skeleton: MessageSkeleton) -> Transport:
    """A Django mail backend connection (the path for every backend but SMTP)."""
    return DjangoBackendTransport(skeleton)
