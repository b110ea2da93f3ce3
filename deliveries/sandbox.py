"""The personalization sandbox: Jinja2's immutable sandbox, bounded in time and in size.

Message content is written by people who prepare messages, so it is untrusted: besides the
attribute rules of Jinja2's sandbox, a template here cannot take a process down.

- **Size.** Every operation that can build a large value in one step (a C call that a time limit
  cannot interrupt) is checked before it runs: `*`, `**`, `%`, `+` and `~`, the string methods
  and filters that pad, repeat or join (`center`, `ljust`, `replace`, `join`, `format`, `indent`,
  `wordwrap`, `batch`, `slice`…). A result above `PERSONALIZATION_MAX_CHARS` is refused, and so is
  a rendered message above it (counted while it is produced).
- **Time.** Each render has `PERSONALIZATION_TIME_LIMIT` seconds. A watchdog thread per process
  interrupts a render past its deadline (an exception raised in the rendering thread between two
  Python instructions), so a loop of loops ends in that time whichever thread renders: the page's
  preview, the preparation, the sender's rendering thread.
- **No unsafe access.** `{{ ''.__class__ }}` is an error (not an empty string), and so are
  `{% extends %}`, `{% include %}` and `{% import %}` (a message is one template).

Every refusal is a `TemplateLimitError` whose message names the construct and says what to do.
Every render path goes through `LimitedTemplate.render`, the template class of the environments
made by `message_environment()`.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from contextlib import contextmanager
from itertools import islice
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.translation import gettext as _
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from jinja2.utils import Namespace


class TemplateLimitError(Exception):
    """A template refused by the sandbox (too big, too slow, unsafe): a sentence for a person."""


_limits: dict[str, float] = {}  # read once from settings (renders run by the million)


def max_chars() -> int:
    if "chars" not in _limits:
        _limits["chars"] = int(getattr(settings, "PERSONALIZATION_MAX_CHARS", 1_000_000))
    return int(_limits["chars"])


def time_limit() -> float:
    if "seconds" not in _limits:
        _limits["seconds"] = float(getattr(settings, "PERSONALIZATION_TIME_LIMIT", 2.0))
    return _limits["seconds"]


@receiver(setting_changed)
def _settings_changed(setting, **kwargs):
    if setting.startswith("PERSONALIZATION_"):
        _limits.clear()


def _n(value: int) -> str:
    return f"{value:,}"


def _too_big(construct: str) -> TemplateLimitError:
    return TemplateLimitError(
        _(
            "The personalization %(construct)s would build a text of more than %(max)s characters: "
            "a message cannot be that large. Correct the template and try again."
        )
        % {"construct": construct, "max": _n(max_chars())}
    )


# --- the time budget ------------------------------------------------------------------------------
class _Overrun(BaseException):
    """Raised in a rendering thread by the watchdog (a BaseException: template code and Jinja2
    catch `Exception` here and there, and must not swallow it)."""


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class _Watchdog:
    """One thread per process that interrupts renders past their deadline.

    A render registers (thread, deadline) and unregisters when it ends: two dictionary operations
    under a lock, so rendering a million messages costs nothing noticeable. The watchdog wakes only
    while renders are registered."""

    POLL = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._renders: dict[int, list] = {}  # thread ident -> [deadline, fired]
        self._pid = None

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked worker process (threads do not survive a fork)
            self._lock = threading.Lock()
            self._wake = threading.Condition(self._lock)
            self._renders = {}
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="personalization-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._renders:
                    self._wake.wait()
                now = time.monotonic()
                for ident, entry in self._renders.items():
                    if not entry[1] and now >= entry[0]:
                        entry[1] = True
                        _set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(_Overrun))
            time.sleep(self.POLL)

    def enter(self, seconds: float) -> list | None:
        ident = threading.get_ident()
        self._ensure_thread()
        with self._wake:
            if ident in self._renders:  # a render inside a render: the outer deadline holds
                return None
            entry = [time.monotonic() + seconds, False]
            self._renders[ident] = entry
            if len(self._renders) == 1:
                self._wake.notify()
        return entry

    def leave(self, entry: list | None) -> bool:
        """Unregister; True when the watchdog fired for this render. Its exception, when not
        delivered yet, is then cleared, so it can never land after the render (it may land while
        leaving: the caller takes it as the overrun it is)."""
        if entry is None:
            return False
        ident = threading.get_ident()
        while True:
            try:
                with self._wake:
                    self._renders.pop(ident, None)
                    fired = entry[1]
                break
            except _Overrun:  # delivered while leaving: leave again, it is this render's
                continue
        if fired:
            _set_async_exc(ctypes.c_ulong(ident), None)
        return fired


_watchdog = _Watchdog()


def _timeout_error(seconds: float) -> TemplateLimitError:
    return TemplateLimitError(
        _(
            "Personalization took more than %(s)s s for one recipient: a loop ({%% for %%}) repeats too "
            "many times. Simplify the template and try again."
        )
        % {"s": f"{seconds:g}"}
    )


@contextmanager
def render_budget(seconds: float | None = None):
    """Run the block with a time budget: past it, TemplateLimitError is raised in this thread."""
    seconds = time_limit() if seconds is None else seconds
    entry = _watchdog.enter(seconds)
    overrun = False
    try:
        try:
            yield
        finally:
            overrun = _watchdog.leave(entry)
    except _Overrun:
        overrun = True
    if overrun:
        raise _timeout_error(seconds)


# --- sizes checked before an operation runs -------------------------------------------------------
def _size(value: Any) -> int | None:
    """The length of a str, list or tuple (what `*` and `+` repeat or join); None otherwise."""
    if isinstance(value, (str, list, tuple)):
        return len(value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


MAX_INT_BITS = 64 * 1024  # about 20,000 digits: past this, arithmetic on integers is refused


_FORMAT_NUMBER = re.compile(r"\d+")


def _check_format(fmt: Any, args: tuple, kwargs: dict, construct: str) -> None:
    """A printf or str.format pattern whose widths or precisions would build a huge text."""
    if not isinstance(fmt, str):
        return
    limit = max_chars()
    if any(len(n) > 12 or int(n) > limit for n in _FORMAT_NUMBER.findall(fmt)):
        raise _too_big(construct)
    if "*" in fmt or re.search(r"\{[^{}]*\{", fmt):  # widths taken from the arguments
        for value in (*args, *kwargs.values()):
            number = _int(value)
            if number is not None and abs(number) > limit:
                raise _too_big(construct)


def check_binop(operator: str, left: Any, right: Any) -> None:
    limit = max_chars()
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            size, count = _size(seq), _int(times)
            if size is not None and count is not None and size * count > limit:
                raise _too_big("{{ … * … }}")
        a, b = _int(left), _int(right)
        if a is not None and b is not None and a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(_("The personalization multiplies numbers that are too large ({{ … * … }}): correct the template."))
    elif operator == "**":
        a, b = _int(left), _int(right)
        if a is not None and b is not None and b > 0 and b * max(a.bit_length(), 1) > MAX_INT_BITS:
            raise TemplateLimitError(
                _("The personalization raises a number to a power that is too large ({{ … ** … }}): correct the template.")
            )
    elif operator == "+":
        a, b = _size(left), _size(right)
        if a is not None and b is not None and a + b > limit:
            raise _too_big("{{ … + … }}")
    elif operator == "%":
        _check_format(left, right if isinstance(right, tuple) else (right,), right if isinstance(right, dict) else {}, "{{ … % … }}")


def _check_str_method(obj: Any, name: str, args: tuple, kwargs: dict) -> None:
    limit = max_chars()
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _int(args[0]) if args else _int(kwargs.get("width"))
        if width is not None and width > limit:
            raise _too_big(f"“.{name}()”")
    elif name == "expandtabs":
        size = _int(args[0]) if args else _int(kwargs.get("tabsize", 8))
        if size is not None and obj.count("\t") * size + len(obj) > limit:
            raise _too_big("“.expandtabs()”")
    elif name == "replace":
        _check_replace(obj, *args[:2], construct="“.replace()”")
    elif name in ("format", "format_map"):
        _check_format(obj, args, kwargs if name == "format" else (args[0] if args and isinstance(args[0], dict) else {}), f"“.{name}()”")


def _check_replace(s: Any, old: Any = "", new: Any = "", construct: str = "replace") -> None:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return
    count = s.count(old) if old else len(s) + 1
    if len(s) + count * (len(new) - len(old)) > max_chars():
        raise _too_big(construct)


def _joined_size(items: list, separator: str) -> int:
    return sum(len(x) if isinstance(x, str) else len(str(x)) for x in items) + len(separator) * max(len(items) - 1, 0)


# --- filters: the ones that can build large values, checked first ---------------------------------
def _guard_filters(filters: dict) -> dict:
    filters = dict(filters)
    original = dict(filters)
    limit = max_chars

    def center(value, width=80):
        if _int(width) is not None and width > limit():
            raise _too_big("|center")
        return original["center"](value, width)

    def indent(s, width=4, first=False, blank=False):
        pad = len(width) if isinstance(width, str) else (_int(width) or 0)
        if len(str(s)) + (str(s).count("\n") + 1) * pad > limit():
            raise _too_big("|indent")
        return original["indent"](s, width, first, blank)

    def wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True):
        text = str(s)
        wrap = wrapstring if isinstance(wrapstring, str) else "\n"
        if len(text) + (len(text) // max(_int(width) or 1, 1) + 1) * len(wrap) > limit():
            raise _too_big("|wordwrap")
        return original["wordwrap"](environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    wordwrap.jinja_pass_arg = original["wordwrap"].jinja_pass_arg  # type: ignore[attr-defined]

    def replace(eval_ctx, s, old, new, count=None):
        _check_replace(str(s), str(old), str(new), construct="|replace")
        return original["replace"](eval_ctx, s, old, new, count)

    replace.jinja_pass_arg = original["replace"].jinja_pass_arg  # type: ignore[attr-defined]

    def join(eval_ctx, value, d="", attribute=None):
        items = list(value) if not isinstance(value, str) else [value]
        if attribute is None and _joined_size(items, str(d)) > limit():
            raise _too_big("|join")
        result = original["join"](eval_ctx, items, d, attribute)
        if len(result) > limit():
            raise _too_big("|join")
        return result

    join.jinja_pass_arg = original["join"].jinja_pass_arg  # type: ignore[attr-defined]

    def format_(value, *args, **kwargs):
        _check_format(value, args, kwargs, "|format")
        return original["format"](value, *args, **kwargs)

    def batch(value, linecount, fill_with=None):
        if fill_with is not None and (_int(linecount) or 0) > MAX_RANGE:
            raise _too_big("|batch")
        return original["batch"](value, linecount, fill_with)

    def slice_(value, slices, fill_with=None):
        if (_int(slices) or 0) > MAX_RANGE:
            raise _too_big("|slice")
        return original["slice"](value, slices, fill_with)

    filters.update(center=center, indent=indent, wordwrap=wordwrap, replace=replace, join=join, format=format_, batch=batch)
    filters["slice"] = slice_
    return filters


class _LimitedNamespace(Namespace):
    """`namespace()` whose attributes are checked like any value a template builds."""

    def __setitem__(self, name, value):  # {% set ns.x = … %}
        size = _size(value)
        if size is not None and size > max_chars():
            raise _too_big("{% set ….… %}")
        super().__setitem__(name, value)


# --- the code generator: `~` goes through the environment like the intercepted operators ---------
class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), ")
        if frame.eval_ctx.volatile:  # as Jinja2's own visit_Concat
            self.write("(markup_join if context.eval_ctx.volatile else str_join)")
        else:
            self.write("markup_join" if frame.eval_ctx.autoescape else "str_join")
        self.write(")")


# --- the template and the environment -------------------------------------------------------------
class LimitedTemplate(Template):
    """A template whose render is bounded in time (PERSONALIZATION_TIME_LIMIT) and in size
    (PERSONALIZATION_MAX_CHARS, counted while the output is produced)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        ctx = self.new_context(dict(*args, **kwargs))
        limit = max_chars()
        try:
            with render_budget():
                out: list[str] = []
                size = 0
                chunks = self.root_render_func(ctx)
                while batch := list(islice(chunks, 32)):  # measured as it is produced, a few chunks at a time
                    out += batch
                    size += sum(map(len, batch))
                    if size > limit:
                        raise TemplateLimitError(
                            _(
                                "The personalized message is larger than %(max)s characters: shorten the content "
                                "or the loops that repeat it."
                            )
                            % {"max": _n(limit)}
                        )
                return self.environment.concat(out)  # type: ignore[attr-defined]
        except (TemplateLimitError, _Overrun) as e:
            if isinstance(e, _Overrun):  # delivered at the very edge of the budget's block
                raise _timeout_error(time_limit()) from None
            raise
        except SecurityError as e:
            raise TemplateLimitError(unsafe_message(str(e))) from None
        except Exception:
            self.environment.handle_exception()


def unsafe_message(detail: str) -> str:
    return _("The template uses something personalization does not allow (%(detail)s): remove it and try again.") % {
        "detail": detail.rstrip(".")
    }


FORBIDDEN_TAGS = {nodes.Extends: "{% extends %}", nodes.Include: "{% include %}", nodes.Import: "{% import %}", nodes.FromImport: "{% from … import %}"}


def forbidden_tags(ast) -> list[str]:
    """The tags a message template cannot use (a message is one template, with no other to load)."""
    return sorted({label for node_type, label in FORBIDDEN_TAGS.items() if next(ast.find_all(node_type), None) is not None})


class MessageEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the limits above (see the module's docstring)."""

    code_generator_class = _CodeGenerator
    template_class = LimitedTemplate
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = _guard_filters(self.filters)
        self.globals.pop("lipsum", None)  # builds text by the megabyte on request
        self.globals["namespace"] = _LimitedNamespace

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def concat_checked(self, parts: tuple, join):
        # Joined first, then measured: each part is a value that passed these checks already, so the
        # join allocates at most the sum of checked sizes (a doubling loop stops at the first step past).
        result = join(parts)
        if len(result) > max_chars():
            raise _too_big("{{ … ~ … }}")
        return result

    def unsafe_undefined(self, obj: Any, attribute: str):
        raise TemplateLimitError(
            unsafe_message(_("the attribute “%(attr)s” of a %(type)s") % {"attr": attribute, "type": type(obj).__name__})
        )

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja2's signature
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(target, "__name__", ""), args, kwargs)
        if __obj is _LimitedNamespace:
            for value in (*args, *kwargs.values()):
                size = _size(value)
                if size is not None and size > max_chars():
                    raise _too_big("namespace()")
        return super().call(__context, __obj, *args, **kwargs)
