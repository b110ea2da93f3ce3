"""The personalization sandbox refuses the known ways out of a Jinja2 template (marketers write
the content, so it is untrusted): reaching Python's classes, a function's globals (and `os` through
them), or changing a value in place. Refused with a sentence, never rendered, in the message and
in a personalized link followed at click time.

tests/deliveries/test_sandbox_limits.py holds the bounds (time, size, nesting) and the first two
of these; these add the classic chains a template injection tries.
"""

import pytest

from deliveries.personalization import TEXT_ENV, TemplateLimitError, compile_content, render_with_missing
from tracking.services import _render_url

ESCAPES = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "“__class__” of a str"),
    ("{{ ().__class__.__base__.__subclasses__() }}", "“__class__” of a tuple"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "“__init__” of a type"),
    ("{{ joiner.__init__.__globals__ }}", "“__init__” of a type"),
    ("{{ namespace.__init__.__globals__ }}", "“__init__” of a type"),
    ("{{ self.__init__.__globals__ }}", "“__init__” of a TemplateReference"),
    ("{{ range.__call__ }}", "“__call__” of a function"),
    ("{{ attributes.__class__ }}", "“__class__” of a dict"),
    ("{{ ''|attr('__class__') }}", "“__class__” of a str"),
    ("{% set x = [1] %}{{ x.append(2) }}", "“append” of a list"),
]


@pytest.mark.parametrize("source, named", ESCAPES)
def test_an_escape_is_refused_with_a_sentence_naming_what(source, named):
    compiled = compile_content(subject="s", html="", text=source)
    assert compiled.ok, compiled.problems
    with pytest.raises(TemplateLimitError, match=f"personalization does not allow .*{named}"):
        render_with_missing(compiled.text, {"first_name": "Ann", "attributes": {"plan": "gold"}})


@pytest.mark.parametrize("source, named", ESCAPES[:3])
def test_a_personalized_link_that_tries_one_is_not_followed(source, named, db):
    with pytest.raises(TemplateLimitError):
        TEXT_ENV.from_string("https://shop.example.com/" + source).render({})
    assert _render_url("https://shop.example.com/" + source, None) is None  # the click answers 404, nothing recorded
