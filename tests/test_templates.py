"""The sandboxed Jinja environment: native values, files, filters, limits, escapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import TemplateError
from bridge.templates.environment import (
    MAX_OUTPUT,
    Templates,
    datetimeformat,
    slack_escape,
    slugify,
)

CONTEXT: dict[str, Any] = {
    "event": {"id": "evt_1", "type": "lytho.proof.status_changed", "source": "lytho"},
    "data": {
        "id": 7,
        "name": "Hero banner",
        "amount": 1500.5,
        "tags": ["hero", "banner"],
        "items": [{"id": 1}, {"id": 2}],
        "asset": None,
        "owner": {"name": "Ann"},
    },
    "changes": {},
    "steps": {"notify": {"ts": "1503435956.000247"}},
    "rule": {"id": "r"},
}


@pytest.fixture
def templates(tmp_path: Path) -> Templates:
    (tmp_path / "templates").mkdir()
    return Templates(tmp_path / "templates")


def put(templates: Templates, name: str, text: str) -> None:
    assert templates.templates_dir is not None
    path = templates.templates_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- render_value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("{{ data.id }}", 7),
        ("{{data.amount}}", 1500.5),
        ("{{ data.tags }}", ["hero", "banner"]),
        ("{{ data.owner }}", {"name": "Ann"}),
        ("{{ data.asset }}", None),
        ("{{ data.id > 5 }}", True),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{- data.id -}}", 7),
        ("{{ data.id }} ", "7 "),
        ("id {{ data.id }}", "id 7"),
        ("{{ data.id }}{{ data.id }}", "77"),
        ("{{ data.items.0.id }}-{{ data.items[1].id }}", "1-2"),
        ("{{ data.items | length }}", 2),
        ("{{ steps.notify.ts }}", "1503435956.000247"),
        ("{{ '{}' }}", "{}"),
        ("no braces", "no braces"),
        ("{ not a template }", "{ not a template }"),
        ("{% if data.id == 7 %}seven{% endif %}", "seven"),
    ],
)
def test_render_value_keeps_native_type_of_a_lone_expression(
    templates: Templates, source: str, value: Any
) -> None:
    assert templates.render_value(source, CONTEXT) == value


def test_render_value_walks_dicts_and_lists(templates: Templates) -> None:
    given = {"a": ["{{ data.id }}", {"b": "x{{ data.id }}"}], "n": 3, "t": True, "z": None}
    assert templates.render_value(given, CONTEXT) == {
        "a": [7, {"b": "x7"}],
        "n": 3,
        "t": True,
        "z": None,
    }


def test_dict_keys_win_over_dict_methods(templates: Templates) -> None:
    context = {"data": {"items": [1, 2], "keys": "k", "values": 3}}
    assert templates.render_value("{{ data.items }}", context) == [1, 2]
    assert templates.render_value("{{ data.keys }}-{{ data.values }}", context) == "k-3"


def test_now_is_aware_utc(templates: Templates) -> None:
    now = templates.render_value("{{ now() }}", {})
    assert datetime.fromisoformat(now).tzinfo is not None
    assert templates.evaluate("now().tzinfo", {}) is UTC or templates.evaluate(
        "now().year > 2000", {}
    )


# --- errors a person can fix -----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ data.nope.id }}", "template '{{ data.nope.id }}': 'data' has no attribute 'nope'"),
        (
            "x {{ data.owner.nope }}",
            "template 'x {{ data.owner.nope }}': 'data.owner' has no attribute 'nope'",
        ),
        (
            "{{ data.asset.id }}",
            "template '{{ data.asset.id }}': 'data.asset' has no attribute 'id'",
        ),
        ("{{ nope }}", "template '{{ nope }}': 'nope' is undefined"),
        ("{{ data.tags[5] }}", "template '{{ data.tags[5] }}': 'data.tags' has no element 5"),
        (
            "a\n{{ data.nope }}",
            "template 'a\\n{{ data.nope }}' (line 2): 'data' has no attribute 'nope'",
        ),
        ("{{ 1 / 0 }}", "template '{{ 1 / 0 }}': ZeroDivisionError: division by zero"),
        ("{{ data.id }", "template '{{ data.id }': invalid template: unexpected '}'"),
    ],
)
def test_render_errors_name_the_variable(templates: Templates, source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        templates.render_value({"k": [source]}, CONTEXT)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("data", "shown"),
    [({"customer": {"name": "Ann"}}, "Ann"), ({"customer": {}}, "a guest"), ({}, "a guest")],
)
def test_the_documented_defaults_for_optional_fields(
    templates: Templates, data: dict[str, Any], shown: str
) -> None:
    # docs/rules.md, "Strict undefined": `default` covers the last name; a missing object
    # needs a default of its own.
    whole = "{{ (data.customer | default({})).name | default('a guest') }}"
    assert templates.render_value(whole, {"data": data}) == shown
    last = "{{ data.customer.name | default('a guest') }}"
    if "customer" in data:
        assert templates.render_value(last, {"data": data}) == shown
    else:
        with pytest.raises(TemplateError, match="'data' has no attribute 'customer'"):
            templates.render_value(last, {"data": data})


def test_shared_values_are_not_named_by_guess(templates: Templates) -> None:
    context = {"data": {"a": 1, "b": 1, "c": None}, "event": {"subject": None}}
    with pytest.raises(TemplateError, match=r"'int object' has no attribute 'x'$"):
        templates.render_value("{{ data.b.x }}", context)
    with pytest.raises(TemplateError, match=r"'None' has no attribute 'x'$"):
        templates.render_value("{{ data.c.x }}", context)


def test_evaluate(templates: Templates) -> None:
    assert templates.evaluate("data.amount > 1000", CONTEXT) is True
    assert templates.evaluate("{{ data.amount > 2000 }}", CONTEXT) is False
    assert templates.evaluate("  'hero' in data.tags ", CONTEXT) is True
    with pytest.raises(TemplateError, match=r"^expression 'data.amount >': unexpected"):
        templates.evaluate("data.amount >", CONTEXT)
    with pytest.raises(
        TemplateError, match=r"^expression 'data.x.y': 'data' has no attribute 'x'$"
    ):
        templates.evaluate("data.x.y", CONTEXT)
    with pytest.raises(TemplateError, match=r"'data' has no attribute 'x'$"):
        templates.evaluate("data.x", CONTEXT)  # an undefined result is an error, not None


def test_checks_for_validate(templates: Templates) -> None:
    assert templates.check_template("Hi {{ data.name }}") is None
    assert templates.check_template("{{ data.name }") == "unexpected '}'"
    assert templates.check_template("a\n{% if %}") == (
        "Expected an expression, got 'end of statement block' (template line 2)"
    )
    assert templates.check_expression("data.x > 3") is None
    assert templates.check_expression("{{ data.x > 3 }}") is None
    assert templates.check_expression("data.x >") == "unexpected 'end of template'"
    assert templates.check_expression("{{ }}") == "empty expression"


# --- template files --------------------------------------------------------------------


def test_text_file_renders_to_str(templates: Templates) -> None:
    put(templates, "note.txt.j2", "Proof {{ data.name }} is <ready> & {{ data.id }}\n")
    assert templates.render_file("note.txt.j2", CONTEXT) == "Proof Hero banner is <ready> & 7\n"
    assert list(templates.names()) == ["note.txt.j2"]


def test_json_file_is_parsed_and_values_are_escaped(templates: Templates) -> None:
    put(
        templates,
        "slack/proof.json.j2",
        """{
  "text": "Proof {{ data.name }} approved",
  "blocks": [{"type": "section",
              "text": {"type": "mrkdwn", "text": "*{{ data.name }}* <{{ data.url }}|open>"}}],
  "id": {{ data.id }},
  "tags": {{ data.tags }},
  "raw": {{ data.tags | tojson }},
  "none": {{ data.asset }},
  "trusted": "{{ '<!here>' | safe }}",
  "once": "{{ data.name | slack_escape }}"
}""",
    )
    context = {
        "data": {
            "name": 'Q3 "Hero" <!channel> & co\n',
            "url": "https://x.test/a?b=1&c=2",
            "id": 7,
            "tags": ["<@U1>"],
            "asset": None,
        }
    }
    rendered = templates.render_file("slack/proof.json.j2", context)
    assert rendered["text"] == 'Proof Q3 "Hero" &lt;!channel&gt; &amp; co\n approved'
    assert rendered["blocks"][0]["text"]["text"] == (
        '*Q3 "Hero" &lt;!channel&gt; &amp; co\n* <https://x.test/a?b=1&amp;c=2|open>'
    )
    assert rendered["id"] == 7
    assert rendered["tags"] == ["&lt;@U1&gt;"]
    assert rendered["raw"] == ["&lt;@U1&gt;"]
    assert rendered["none"] is None
    assert rendered["trusted"] == "<!here>"
    assert rendered["once"] == 'Q3 "Hero" &lt;!channel&gt; &amp; co\n'


def test_json_file_that_does_not_parse_names_file_and_line(templates: Templates) -> None:
    put(templates, "bad.json.j2", '{\n  "text": {{ data.name | safe }}\n}\n')
    with pytest.raises(TemplateError) as caught:
        templates.render_file("bad.json.j2", CONTEXT)
    assert str(caught.value) == (
        f"{templates.templates_dir}/bad.json.j2: output is not valid JSON: Expecting value "
        "at output line 2: '\"text\": Hero banner'"
    )


def test_render_error_in_a_file_names_file_and_line(templates: Templates) -> None:
    put(templates, "proof_approved.json.j2", '{\n\n  "text": "{{ data.asset.id }}"\n}\n')
    with pytest.raises(TemplateError) as caught:
        templates.render_file("proof_approved.json.j2", CONTEXT)
    assert str(caught.value) == (
        f"{templates.templates_dir}/proof_approved.json.j2:3: 'data.asset' has no attribute 'id'"
    )


def test_syntax_error_in_a_file(templates: Templates) -> None:
    put(templates, "broken.j2", "line one\n{% for x in %}\n")
    message = (
        f"{templates.templates_dir}/broken.j2:2: "
        "Expected an expression, got 'end of statement block'"
    )
    assert templates.check_file("broken.j2") == message
    with pytest.raises(TemplateError) as caught:
        templates.render_file("broken.j2", CONTEXT)
    assert str(caught.value) == message


def test_template_names_cannot_leave_the_directory(templates: Templates, tmp_path: Path) -> None:
    (tmp_path / "secret.j2").write_text("{{ 'secret' }}")
    assert templates.templates_dir is not None
    (templates.templates_dir / "link.j2").symlink_to(tmp_path / "secret.j2")
    (templates.templates_dir / "plain.txt").write_text("not a template")
    for name in ("../secret.j2", "/etc/passwd", "link.j2", "plain.txt", "a\\..\\b.j2"):
        with pytest.raises(TemplateError, match=r"is not allowed; expected a \*\.j2 file inside"):
            templates.render_file(name, CONTEXT)
    assert (
        templates.check_file("missing.j2")
        == f"template 'missing.j2' not found in {templates.templates_dir}"
    )


def test_a_templates_dir_that_does_not_exist_is_named(tmp_path: Path) -> None:
    # BRIDGE_TEMPLATES_DIR set to a folder that is not there: say so, not "not configured".
    missing = Templates(tmp_path / "nowhere")
    message = (
        f"template 'x.j2' not found: the templates directory {tmp_path / 'nowhere'} does not exist"
    )
    assert missing.check_file("x.j2") == message
    with pytest.raises(TemplateError) as caught:
        missing.render_file("x.j2", {})
    assert str(caught.value) == message
    assert list(missing.names()) == []


def test_without_a_templates_dir(tmp_path: Path) -> None:
    bare = Templates()
    message = "template 'x.j2' given but no templates directory is configured"
    assert bare.check_file("x.j2") == message
    with pytest.raises(TemplateError, match=message):
        bare.render_file("x.j2", {})
    assert list(bare.names()) == []


def test_include_stays_in_the_sandbox(templates: Templates) -> None:
    put(templates, "part.j2", "[{{ data.id }}]")
    put(templates, "whole.j2", "{% include 'part.j2' %}!")
    assert templates.render_file("whole.j2", CONTEXT) == "[7]!"
    put(templates, "escape.j2", "{% include '../../etc/passwd' %}")
    with pytest.raises(TemplateError, match=r"escape\.j2:1: "):
        templates.render_file("escape.j2", CONTEXT)


# --- filters ---------------------------------------------------------------------------


def test_filters(templates: Templates) -> None:
    render = templates.render_value
    assert render("{{ data | tojson }}", {"data": {"a": "é", "b": [1]}}) == '{"a": "é", "b": [1]}'
    assert render("{{ data.missing | default('n/a') }}", CONTEXT) == "n/a"
    assert render("{{ data.name | slugify }}", CONTEXT) == "hero-banner"
    assert render("{{ '<!channel> & co' | slack_escape }}", {}) == "&lt;!channel&gt; &amp; co"
    assert render(
        "{{ event.time | datetimeformat('%d %b %Y') }}", {"event": {"time": "2026-11-25T10:00:00Z"}}
    ) == ("25 Nov 2026")


@pytest.mark.parametrize(
    ("value", "args", "text"),
    [
        ("2026-11-25T10:00:00Z", (), "2026-11-25 10:00 UTC"),
        ("2026-11-25T10:00:00+02:00", ("%H:%M",), "08:00"),
        ("2026-11-25T10:00:00", ("%H:%M",), "10:00"),
        (0, ("%Y-%m-%d",), "1970-01-01"),
        (datetime(2026, 1, 2, 3, 4, tzinfo=UTC), ("%Y-%m-%dT%H:%M",), "2026-01-02T03:04"),
        ("2026-07-01T12:00:00Z", ("%H:%M %Z", "Europe/Amsterdam"), "14:00 CEST"),
    ],
)
def test_datetimeformat(value: Any, args: tuple[str, ...], text: str) -> None:
    assert datetimeformat(value, *args) == text


def test_datetimeformat_errors(templates: Templates) -> None:
    with pytest.raises(ValueError, match="cannot read 'soon' as a date"):
        datetimeformat("soon")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        datetimeformat(0, "%H", "Mars/Base")
    with pytest.raises(TemplateError, match="ValueError: datetimeformat cannot read"):
        templates.render_value("{{ 'x' | datetimeformat }}", {})


def test_slugify_and_slack_escape() -> None:
    assert slugify("  Héro Banner (v2) -- final ") == "hero-banner-v2-final"
    assert slack_escape("a & <b>") == "a &amp; &lt;b&gt;"
    assert slack_escape(slack_escape("<")) == "&lt;"  # never escaped twice


# --- the sandbox -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ data.tags.append(1) }}",
        "{{ data.owner.update({'a': 1}) }}",
        "{{ data.owner.clear() }}",
        "{{ range.__self__ }}",
        "{{ now.__globals__ }}",
        "{{ config }}",
        "{{ environ }}",
        "{{ request.environ }}",
        "{{ '{0.__class__}'.format(data) }}",
        "{{ data.name.format_map(data) }}",
        "{{ (data|attr('__class__')) }}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    ],
)
def test_sandbox_escapes_fail_safely(templates: Templates, source: str) -> None:
    with pytest.raises(TemplateError):
        templates.render_value(source, CONTEXT)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ range(10**9) | list }}", "range of 1000000000 items; the sandbox allows 10000"),
        ("{{ 'a' * 10**9 }}", "the repetition would exceed the 64 KiB limit"),
        ("{{ [0] * 10**9 }}", "the repetition would exceed the 64 KiB limit"),
        ("{{ 2 ** (10**9) }}", "the number would exceed 4,000 digits"),
        ("{{ 'x'.ljust(10**9) }}", "str.ljust() would exceed the 64 KiB limit"),
        ("{{ 'x' | center(10**9) }}", "the center filter would exceed the 64 KiB limit"),
        ("{{ '%1000000000d' | format(1) }}", "format widths of a million or more"),
        ("{{ '%1000000000d' % 1 }}", "format widths of a million or more"),
        ("{{ '%.999999999f' % 1.5 }}", "format widths of a million or more"),
        ("{{ '%*d' % (10**9, 1) }}", "format widths of a million or more"),
        ("{{ '%(a)9999999s' % {'a': 1} }}", "format widths of a million or more"),
        ("{{ ('x' * 60000) | replace('x', 'xxxx') }}", "the replace filter would exceed"),
        ("{{ ('x' * 60000).replace('x', 'xxxx') }}", "str.replace() would exceed"),
        (
            "{% set s = 'x' * 40000 %}{{ (s ~ s) | length }}",
            "the string would exceed the 64 KiB limit",
        ),
        (
            "{% set s = 'x' * 40000 %}{{ (s + s) | length }}",
            "the string would exceed the 64 KiB limit",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "the string would exceed the 64 KiB limit",
        ),
        (
            "{% for i in range(10000) %}{{ 'abcdefghij' }}{% endfor %}",
            "output exceeds the 64 KiB limit",
        ),
    ],
)
def test_sandbox_bounds_what_a_template_can_build(
    templates: Templates, source: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        templates.render_value(source, CONTEXT)


def test_ordinary_formatting_still_works(templates: Templates) -> None:
    assert templates.render_value("{{ 'Order 1000000: %05d' % 42 }}", {}) == "Order 1000000: 00042"
    assert templates.render_value("{{ '%.2f' | format(1.5) }}", {}) == "1.50"
    assert templates.render_value("{{ 'ab' * 3 }}|{{ [1] * 2 }}", {}) == "ababab|[1, 1]"
    assert templates.render_value("{{ 2 ** 10 }}", {}) == 1024


def test_output_up_to_the_limit_is_fine(templates: Templates) -> None:
    text = templates.render_value("{% for i in range(8) %}{{ 'x' * 8192 }}{% endfor %}", {})
    assert len(text) == MAX_OUTPUT
    put(templates, "big.json.j2", '{"a": "{{ data.s }}"}')
    rendered = templates.render_file("big.json.j2", {"data": {"s": "é" * 30000}})
    assert rendered == {"a": "é" * 30000}  # 60,000 bytes
    with pytest.raises(TemplateError, match=r"big\.json\.j2: output exceeds the 64 KiB limit"):
        templates.render_file("big.json.j2", {"data": {"s": "é" * 33000}})
    with pytest.raises(TemplateError, match="output exceeds the 64 KiB limit"):
        templates.render_value("{{ s }}{{ s }}", {"s": "é" * 20000})


def test_compiled_forms_are_cached(templates: Templates) -> None:
    templates.render_value("x {{ data.id }}", CONTEXT)
    templates.evaluate("data.id", CONTEXT)
    first = (dict(templates._templates), dict(templates._expressions))
    for _ in range(3):
        templates.render_value("x {{ data.id }}", CONTEXT)
        templates.evaluate("{{ data.id }}", CONTEXT)
    assert (templates._templates, templates._expressions) == first
    assert json.dumps(templates.render_value({"a": "{{ data.id }}"}, CONTEXT)) == '{"a": 7}'


def test_slack_escaping_of_inline_parameters() -> None:
    templates = Templates()
    context = {"data": {"name": "<!channel> & <https://evil|click>", "n": 3, "tags": ["<b>"]}}
    rendered = templates.render_value(
        {
            "text": "<!here> {{ data.name }} ({{ data.n }})",
            "count": "{{ data.n }}",
            "tags": "{{ data.tags }}",
            "trusted": "{{ data.name | safe }}",
        },
        context,
        escape="slack",
    )
    assert rendered == {
        # The rule's own text may mention; the event's data cannot.
        "text": "<!here> &lt;!channel&gt; &amp; &lt;https://evil|click&gt; (3)",
        "count": 3,
        "tags": ["&lt;b&gt;"],
        "trusted": "<!channel> & <https://evil|click>",
    }
    # Without escaping (any other action), values are inserted as they are.
    assert templates.render_value("{{ data.name }}", context) == context["data"]["name"]


@pytest.mark.parametrize("source", ["{{ 2**100000 }}", "{{ (10**4000) * (10**4000) }}"])
def test_a_huge_integer_is_a_template_error(source: str) -> None:
    # Python cannot print an integer of more than 4,300 digits: refuse to build one.
    with pytest.raises(TemplateError, match="the number would exceed"):
        Templates().render_value({"t": source}, {})
    assert Templates().render_value("{{ 2**1000 }}", {}) == 2**1000
