"""Known Jinja SSTI payloads: none reaches Python internals, nothing hangs, unit and end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.errors import TemplateError
from bridge.templates.environment import MAX_OUTPUT, Templates
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
    # Payloads a rule file may hold. One file the loader refuses (a `text:` that renders
    # a list, say) would leave no rule active: those are counted here, not written.
    from bridge.actions import action_schemas
    from bridge.errors import RuleError
    from bridge.rules import load_rules

    refused_by_loader = 0
    with running_bridge(redis_url, key_prefix, tmp_path) as bridge:
        for n, payload in enumerate(PAYLOADS):
            rule = RULE.format(n=n, payload=json.dumps(payload))
            alone = tmp_path / "alone" / f"{n:02d}"
            alone.mkdir(parents=True)
            (alone / "rule.yaml").write_text(rule)
            try:
                load_rules(alone, templates=Templates(None), actions=action_schemas())
            except RuleError:
                refused_by_loader += 1
                continue
            bridge.write_rule(f"ssti-{n:02d}.yaml", rule)
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
            refused_by_loader=refused_by_loader,
            payloads=len(PAYLOADS),
            slack_messages=len(posted),
            dead_letters_template_error=len(letters),
        )
        assert len(posted) + len(letters) == len(matched)
        assert len(matched) + refused_by_loader == len(PAYLOADS)


# --- bounded work and memory (issue 12, items 7 and 8) -----------------------------------

# The hostile templates of the issue and their kin: each stops at a budget.
HOSTILE = {
    "four nested range(10000) loops": (
        "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}"
        "{% for d in range(10000) %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}done"
    ),
    "nested loops reading attributes": (
        "{% for a in range(10000) %}{% for b in range(10000) %}"
        "{% if data.id == b %}{% endif %}{% endfor %}{% endfor %}"
    ),
    "a sort of 10,000 items in a loop": (
        "{% set l = range(10000)|list|reverse|list %}"
        "{% for i in range(10000) %}{% set x = l|sort %}{% endfor %}"
    ),
    "10,000 strings of 60 KB in a list": (
        "{{ range(10000)|map('string')|map('center', 60000)|list|length }}"
    ),
    "a namespace list grown in a loop": (
        "{% set ns = namespace(l=[]) %}{% for i in range(10000) %}"
        "{% set ns.l = ns.l + ['x' * 60000] %}{% endfor %}{{ ns.l|length }}"
    ),
    "10,000 x 60 KB gathered in a set block": (
        "{% set s = 'y' * 60000 %}{% set big %}{% for i in range(10000) %}{{ s }}{% endfor %}"
        "{% endset %}{{ big|length }}"
    ),
    "1,000 references to one 60 KB string": "{% set s = 'x' * 60000 %}{{ [s] * 1000 }}",
}

# Peak memory of one render: the process's resident size before it, and its high-water
# mark after, reset first (Linux: writing 5 to clear_refs) so that the imports' peak
# does not hide the render's.
_MEASURE = r"""
import json, sys, time
from bridge.errors import TemplateError
from bridge.templates.environment import Templates

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))

templates = Templates(None)
context = {"event": {"id": "e"}, "data": {"id": 1}, "changes": {}, "steps": {}, "rule": {}}
templates.render_value("{{ data.id }} warm", context)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
before = status("VmRSS")
began = time.monotonic()
try:
    templates.render_value({"text": sys.argv[1]}, context)
    error = None
except TemplateError as exc:
    error = str(exc)
took = time.monotonic() - began
peak = status("VmHWM")
print(json.dumps({"error": error, "seconds": took, "before_kb": before, "peak_kb": peak}))
"""


def test_hostile_templates_stop_at_a_budget_with_bounded_memory(figures: Figures) -> None:
    # Each in a fresh process, so that its peak memory is its own. Before the budget the
    # list of strings took 594 MB and the loops ran until killed.
    from bridge.templates.environment import MAX_BUILT

    root = Path(__file__).resolve().parents[2]
    stalls: dict[str, float] = {}
    growth: dict[str, float] = {}
    for name, source in HOSTILE.items():
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, source],
            capture_output=True,
            text=True,
            cwd=root,
            check=True,
        )
        measured = json.loads(done.stdout)
        assert measured["error"] is not None, name
        assert "exceeded its budget of " in measured["error"], (name, measured["error"])
        grown = (measured["peak_kb"] - measured["before_kb"]) * 1024
        # What the render built, plus one value as large as the budget in transit.
        assert grown <= 3 * MAX_BUILT, (name, grown)
        stalls[name] = round(measured["seconds"], 2)
        growth[name] = round(grown / 2**20, 1)
    figures(
        hostile_templates=len(HOSTILE),
        stopped_by_budget=len(HOSTILE),
        worst_stall_s=max(stalls.values()),
        stall_s=stalls,
        peak_growth_mb=growth,
        worst_peak_growth_mb=max(growth.values()),
    )


HOSTILE_RULES = """
rules:
  - id: slow-step
    on: shop.order.paid
    actions:
      - id: say
        uses: slack.post
        with:
          channel: "#ops"
          text: {loops}
  - id: big-file
    on: shop.order.paid
    actions:
      - id: say
        uses: slack.post
        with:
          channel: "#ops"
          template: big.txt.j2
  - id: big-when
    on: shop.order.paid
    when:
      - "range(10000)|map('string')|map('center', 60000)|list|length > 0"
    actions:
      - uses: slack.post
        with: {{channel: "#ops", text: "never"}}
  - id: innocent
    on: shop.order.paid
    actions:
      - uses: slack.post
        with: {{channel: "#ops", text: "paid {{{{ data.id }}}}"}}
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_hostile_template_fails_its_step_and_sends_nothing(
    redis_url: str, key_prefix: str, tmp_path: Path, figures: Figures
) -> None:
    with running_bridge(redis_url, key_prefix, tmp_path) as bridge:
        loops = json.dumps(HOSTILE["nested loops reading attributes"])
        bridge.write_rule("hostile.yaml", HOSTILE_RULES.format(loops=loops))
        bridge.write_template("big.txt.j2", "Big\n" + HOSTILE["10,000 strings of 60 KB in a list"])
        bridge.start_slack()
        bridge.start_web()
        bridge.start_worker()
        body = {"id": "hostile-1", "type": "shop.order.paid", "data": {"id": 4711}}
        assert bridge.post(body).status_code == 202
        evaluated = wait_for(
            lambda: bridge.trace_has("hostile-1", "evaluated"), what="the evaluation"
        )
        assert sorted(evaluated["matched"]) == ["big-file", "innocent", "slow-step"]
        # The `when:` that would build too much is an error: its rule does not match.
        (big_when,) = [e for e in evaluated["rules"] if e["rule"] == "big-when"]
        reason = big_when["conditions"]["children"][0]["reason"]
        assert reason.startswith("error: expression ")
        assert reason.endswith(
            ": exceeded its budget of 32 MiB of values built (strings, "
            "lists, dicts); build smaller strings and lists"
        )

        def runs() -> list[dict[str, object]]:
            return [e for e in bridge.trace("hostile-1") if e["kind"] == "run"]

        wait_for(lambda: len(runs()) == 3, timeout=60, what="the three runs to end")
        # The innocent rule's message, and nothing else, reached Slack.
        assert [m["text"] for m in bridge.slack.received()] == ["paid 4711"]
        letters = {letter["rule_id"]: letter for letter in bridge.dead_letters()}
        assert sorted(letters) == ["big-file", "slow-step"]
        assert letters["slow-step"]["error"].startswith("template ")
        assert "exceeded its budget of " in letters["slow-step"]["error"]
        assert letters["big-file"]["error"].startswith(
            f"{bridge.templates_dir / 'big.txt.j2'}:2: exceeded its budget of 32 MiB"
        )
        steps = [e for e in bridge.trace("hostile-1") if e["kind"] == "step"]
        stall = max(float(str(e["duration_ms"])) for e in steps if e["rule"] != "innocent")
        figures(
            hostile_rules=3,
            slack_messages=1,
            dead_letters=len(letters),
            worst_step_ms=stall,
            slow_step_error=letters["slow-step"]["error"][-90:],
        )
