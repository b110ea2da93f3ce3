"""Issue 15, item 1: a personalization template cannot take the service down.

Each test here failed before the sandbox was bounded: the loop of loops ran for hours, `'a' * 10**9`
allocated a gigabyte, `''.__class__` rendered as an empty string, `{% extends %}` and deep nesting
left the message "Preparing…" with an exception in the worker.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.urls import reverse

from deliveries.models import JournalEntry, SendingLog, State
from deliveries.personalization import TemplateLimitError, compile_content, render_with_missing

pytestmark = pytest.mark.django_db

LOOP_OF_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def render(source: str, **ctx):
    compiled = compile_content(subject="s", html="", text=source)
    assert compiled.ok, compiled.problems
    return render_with_missing(compiled.text, ctx)[0]


def critical_lines(d):
    return list(JournalEntry.objects.filter(delivery=d, level=JournalEntry.Level.CRITICAL).values_list("text", flat=True))


@pytest.mark.parametrize(
    "source, named",
    [
        ("{{ 'a' * 10**9 }}", "{{ … * … }}"),
        ("{{ [0] * 10**9 }}", "{{ … * … }}"),
        ("{{ 2 ** 1000000000 }}", "{{ … ** … }}"),
        ("{{ 'a'.center(10**9) }}", ".center()"),
        ("{{ 'a'|center(10**9) }}", "|center"),
        ("{{ 'x'|indent(10**9) }}", "|indent"),
        ("{{ ('x' * 1000)|replace('', 'y' * 1000) }}", "|replace"),
        ("{{ '%1000000000d' % 1 }}", "{{ … % … }}"),
        ("{{ '{:>1000000000}'.format(1) }}", ".format()"),
        ("{{ [1]|batch(10**9, 0)|list }}", "|batch"),
        ("{% set ns = namespace(s='a' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "{{ … ~ … }}"),
        ("{% set ns = namespace(s='a' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "{{ … + … }}"),
    ],
)
def test_building_a_huge_value_is_refused_naming_the_construct(source, named):
    with pytest.raises(TemplateLimitError) as e:
        render(source)
    assert named in str(e.value)
    assert "1,000,000 characters" in str(e.value) or "too large" in str(e.value)


def test_a_rendered_message_larger_than_the_cap_is_refused(settings):
    settings.PERSONALIZATION_MAX_CHARS = 10_000
    with pytest.raises(TemplateLimitError, match="larger than 10,000 characters"):
        render("{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}")
    assert render("{% for i in range(10) %}{{ 'y' * 100 }}{% endfor %}") == "y" * 1000


def test_a_loop_of_loops_ends_at_the_time_limit_with_a_sentence(settings):
    settings.PERSONALIZATION_TIME_LIMIT = 0.3
    with pytest.raises(TemplateLimitError, match=r"took more than 0.3 s for one recipient: a loop \(\{% for %\}\)"):
        render(LOOP_OF_LOOPS)


def test_the_time_limit_holds_in_any_thread_and_spares_the_others(settings):
    """The sender renders in a thread of its own: the budget interrupts that thread only."""
    settings.PERSONALIZATION_TIME_LIMIT = 0.3
    slow = compile_content(subject="s", html="", text=LOOP_OF_LOOPS).text
    fast = compile_content(subject="s", html="", text="Hi {{ n }}").text
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(render_with_missing, slow if i % 3 == 0 else fast, {"n": i}) for i in range(9)]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result()[0])
            except TemplateLimitError:
                outcomes.append("refused")
    assert outcomes == ["refused", "Hi 1", "Hi 2", "refused", "Hi 4", "Hi 5", "refused", "Hi 7", "Hi 8"]
    assert render("Hi {{ n }}", n=threading.get_ident() % 10) .startswith("Hi ")  # this thread renders on


def test_unsafe_attribute_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateLimitError, match="“__class__” of a str"):
        render("{{ ''.__class__ }}")
    with pytest.raises(TemplateLimitError, match="“__init__” of a type"):
        render("{{ cycler.__init__.__globals__ }}")


def test_ordinary_personalization_still_works():
    out = render(
        "Hello {{ first_name|default('friend') }} {{ [1, 2]|join(',') }} {{ 'ab' ~ 'cd' }} {{ 3 * 4 }} "
        "{{ '%s-%d'|format('a', 3) }} {{ '-' * 3 }} {{ 'x'|center(5) }}|{% set ns = namespace(n=0) %}"
        "{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
        first_name="Ann",
    )
    assert out == "Hello Ann 1,2 abcd 12 a-3 ---   x  |3"


@pytest.mark.parametrize(
    "html, says",
    [
        ("{{ ''.__class__ }}", "“__class__” of a str"),
        ("{{ 'a' * 10**9 }}", "{{ … * … }}"),
        ("{% extends 'base.html' %}", "{% extends %} cannot be used in a message"),
        ("{% include 'x.html' %}", "{% include %} cannot be used in a message"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
    ],
)
def test_preparation_fails_with_a_message_and_never_stays_preparing(ready_delivery, html, says):
    d = ready_delivery(html=html + "{{ unsubscribe_url }}")
    assert d.state == State.PREPARATION_FAILED
    assert any(says in line for line in critical_lines(d)), critical_lines(d)


def test_a_slow_template_fails_preparation_once_not_once_per_recipient(ready_delivery, settings):
    settings.PERSONALIZATION_TIME_LIMIT = 0.2
    d = ready_delivery(html=LOOP_OF_LOOPS + "{{ unsubscribe_url }}")  # 5 recipients: one overrun is enough
    assert d.state == State.PREPARATION_FAILED
    lines = critical_lines(d)
    assert any("Personalization failed for 1 profile: Personalization took more than 0.2 s" in line for line in lines), lines


def test_a_preparation_past_its_time_limit_fails_saying_so(ready_delivery, settings):
    settings.PREPARATION_TIME_LIMIT = 0
    d = ready_delivery()
    assert d.state == State.PREPARATION_FAILED
    assert any("The preparation took longer than 0 s and was stopped" in line for line in critical_lines(d))
    assert not SendingLog.objects.filter(delivery=d).exists()


def test_the_preview_shows_the_error_instead_of_hanging(client, marketer, new_delivery, settings):
    settings.PERSONALIZATION_TIME_LIMIT = 0.3
    d = new_delivery(html=LOOP_OF_LOOPS)
    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk]))
    assert page.status_code == 200
    assert "took more than 0.3 s for one recipient" in page.content.decode()


def test_every_task_has_soft_and_hard_time_limits_from_settings(settings):
    import importlib

    from config.celery import app

    for module in ("audiences.tasks", "deliveries.tasks", "kpis.tasks", "ops.tasks", "tracking.tasks", "system.tasks"):
        importlib.import_module(module)
    assert app.conf.task_soft_time_limit == settings.TASK_SOFT_TIME_LIMIT
    assert app.conf.task_time_limit == settings.TASK_SOFT_TIME_LIMIT + settings.TASK_TIME_LIMIT_GRACE
    prepare = app.conf.task_annotations["deliveries.prepare"]
    assert prepare["soft_time_limit"] > settings.PREPARATION_TIME_LIMIT
    assert prepare["time_limit"] > prepare["soft_time_limit"]
    for name, limits in app.conf.task_annotations.items():
        assert name in app.tasks, name
        assert limits["time_limit"] > limits["soft_time_limit"] > 0
