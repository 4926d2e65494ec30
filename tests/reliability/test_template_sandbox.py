"""Known Jinja SSTI payloads: none reaches Python internals, nothing hangs, unit and end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bridge.errors import TemplateError
from bridge.templates import MAX_OUTPUT, Templates
from tests.helpers import running_bridge, wait_for
from tests.reliability.conftest import Figures

PAYLOADS = [
    # Walking from a literal to object.__subclasses__().
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__()[40]('/etc/passwd').read() }}",
    "{{ (1).__class__.__subclasses__() }}",
    "{{ ''.__class__.mro() }}",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{{ c }}{% endfor %}",
    "{{ event.__class__ }}",
    "{{ data.__class__.__init__.__globals__ }}",
    "{{ data.__dict__ }}",
    "{{ dict.__base__ }}",
    # Globals of helper functions.
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ lipsum.__globals__.__builtins__.__import__('os') }}",
    "{{ range.__class__ }}",
    "{{ now.__globals__ }}",
    "{{ now().__class__ }}",
    # Framework objects that other hosts expose.
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{{ get_flashed_messages.__globals__ }}",
    "{{ url_for.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    # attr() and subscript spellings of the same walk.
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ lipsum|attr('__globals__') }}",
    "{{ (lipsum|attr('__globals__')).get('os') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ ''['__class__'] }}",
    "{{ data['__class__'] }}",
    "{{ data|tojson|attr('__class__') }}",
    "{{ data.tags|map('attr', '__class__')|list }}",
    "{{ data.tags|map(attribute='__class__')|list }}",
    "{{ data.tags|selectattr('__class__')|list }}",
    "{{ [1, 2]|sort(attribute='__class__') }}",
    "{{ data.items.__self__ }}",
    "{{ ''.join.__doc__ }}",
    "{{ 'abc'.__len__() }}",
    # Format-string tricks.
    "{{ '{0.__class__.__mro__}'.format(data) }}",
    "{{ '{0.__globals__}'|format(lipsum) }}",
    "{{ '%s'|format(data.__class__) }}",
    "{{ '{0:>999999999}'.format(1) }}",
    "{{ '%999999999d'|format(1) }}",
    # Mutation of what the template was given.
    "{% set f = data.tags.append %}{{ f('x') }}",
    "{{ [].pop.__self__ }}",
    "{{ {}.update.__self__ }}",
    "{% set x = namespace(v=1) %}{% set x.__class__ = 1 %}{{ x.__class__ }}",
    # Resource exhaustion.
    "{{ range(10**10) }}",
    "{{ range(10**10)|list }}",
    "{% for i in range(10**10) %}x{% endfor %}",
    "{% for i in range(9999) %}{% for j in range(9999) %}x{% endfor %}{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "{{ 'a' * 1000000 * 1000000 }}",
    "{{ ['a'] * 10**9 }}",
    "{{ 'x'|replace('x', 'y' * 100000) }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|indent(999999999) }}",
    "{{ 'x'|wordwrap(999999999) }}",
    "{{ ('a' * 60000) ~ ('a' * 60000) }}",
    "{% set a = 'a' * 60000 %}{{ [a, a, a]|join }}",
    "{{ 99999**99999**99999 }}",
    "x {{ 2**100000 }}",
    "{% macro r(n) %}{{ r(n) }}{% endmacro %}{{ r(1) }}",
]

# What a rendered value would show had it reached Python internals.
LEAKS = (
    "<class",
    "<function",
    "<built-in",
    "<module",
    "<bound method",
    "__globals__",
    "__builtins__",
    "subclasses",
    "Popen",
    "os.environ",
    "uid=",
    "root:",
    "BRIDGE_",
)
CONTEXT = {
    "event": {"id": "evt-1", "type": "shop.order.paid"},
    "data": {"tags": ["a", "b"], "id": 1},
    "changes": {},
    "steps": {},
    "rule": {"id": "r"},
}


def assert_safe(rendered: object) -> None:
    text = json.dumps(rendered, default=repr)
    assert len(text) <= 2 * MAX_OUTPUT
    for leak in LEAKS:
        assert leak not in text, (leak, text[:300])


def test_ssti_payloads_never_reach_python_internals(tmp_path: Path, figures: Figures) -> None:
    templates = Templates(tmp_path)
    refused = rendered = 0
    slowest = 0.0
    for payload in PAYLOADS:
        for escape in (None, "slack"):
            context = json.loads(json.dumps(CONTEXT))
            began = time.monotonic()
            try:
                value = templates.render_value({"text": payload}, context, escape=escape)
            except TemplateError:
                refused += 1
            else:
                rendered += 1
                assert_safe(value)
            # How long it took is a figure, not a test (a busy machine is slow); a payload
            # that hung would fail the test by its timeout (pytest-timeout).
            slowest = max(slowest, time.monotonic() - began)
            # Nothing the template was given has been changed.
            assert context == CONTEXT, payload
    figures(
        payloads=len(PAYLOADS),
        renders=2 * len(PAYLOADS),
        refused_with_template_error=refused,
        rendered_harmlessly=rendered,
        slowest_render_ms=round(slowest * 1000, 1),
    )


RULE = """
id: ssti-{n}
on: shop.order.paid
actions:
  - id: say
    uses: slack.post
    with:
      channel: "#ops"
      text: {payload}
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_ssti_payloads_in_a_rule_never_reach_slack(
    redis_url: str, key_prefix: str, tmp_path: Path, figures: Figures
) -> None:
    # Payloads a rule file may hold; those its loader refuses are reported, not loaded.
    with running_bridge(redis_url, key_prefix, tmp_path) as bridge:
        for n, payload in enumerate(PAYLOADS):
            bridge.write_rule(f"ssti-{n:02d}.yaml", RULE.format(n=n, payload=json.dumps(payload)))
        bridge.start_slack()
        bridge.start_web()
        bridge.start_worker()
        assert (
            bridge.post(
                {"id": "ssti", "type": "shop.order.paid", "data": CONTEXT["data"]}
            ).status_code
            == 202
        )
        evaluated = wait_for(lambda: bridge.trace_has("ssti", "evaluated"), what="the evaluation")
        matched = evaluated["matched"]

        def finished() -> list[dict[str, object]]:
            return [e for e in bridge.trace("ssti") if e["kind"] == "run"]

        wait_for(lambda: len(finished()) == len(matched), timeout=60, what="every run to end")
        posted = bridge.slack.received()
        letters = bridge.dead_letters()
        for message in posted:
            assert_safe(message["text"])
        for letter in letters:
            assert letter["error"].startswith("template "), letter["error"]
        figures(
            rules_loaded=len(matched),
            payloads=len(PAYLOADS),
            slack_messages=len(posted),
            dead_letters_template_error=len(letters),
        )
        assert len(posted) + len(letters) == len(matched)
