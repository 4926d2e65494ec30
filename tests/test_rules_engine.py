"""Matching events against a RuleSet: candidates, order, stop, traces, context, `if:`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pytest

from bridge.errors import TemplateError
from bridge.events import Event
from bridge.rules import (
    RuleSet,
    Step,
    event_context,
    load_rules,
    should_run,
)
from bridge.schema import ActionSchema, Param
from bridge.templates.environment import Templates

ACTIONS = {
    "slack.post": ActionSchema(
        "slack.post",
        "Post a Slack message",
        {n: Param(n) for n in ("channel", "text", "template", "thread_ts")},
    ),
    "lytics.collect": ActionSchema(
        "lytics.collect",
        "Send data to Lytics",
        {"stream": Param("stream"), "data": Param("data", types=("object", "array"))},
    ),
    "lytho.tag_asset": ActionSchema(
        "lytho.tag_asset",
        "Tag an asset",
        {"asset_id": Param("asset_id", types=("any",)), "tags": Param("tags", types=("array",))},
    ),
}

PROOF_RULE = """\
id: proof-approved-to-slack
description: "Tell #creative when a proof is approved"
priority: 100
on: lytho.proof.status_changed
when:
  - {path: data.status, changed: {to: approved}}
  - {path: data.tags, contains: hero}
  - any:
      - {path: data.priority, in: [high, urgent]}
      - data.due_in_days < 3
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#creative", text: "Proof {{ data.id }} approved"}
  - uses: lytics.collect
    with:
      stream: lytho_workflow
      data: {event: proof_approved, proof_id: "{{ data.id }}", slack_ts: "{{ steps.notify.ts }}"}
  - uses: lytho.tag_asset
    if: "'approved' not in data.asset.tags"
    with: {asset_id: "{{ data.asset.id }}", tags: [approved]}
"""


def proof_event(**data: object) -> Event:
    payload = {"id": 7, "status": "approved", "tags": ["hero"], "priority": "high", **data}
    return Event(
        id="evt_1",
        source="lytho",
        type="lytho.proof.status_changed",
        subject="proof/7",
        time="2026-11-25T10:00:00.000Z",
        data=payload,
        changes={"status": {"from": "in_review", "to": "approved"}},
    )


def rules_from(tmp_path: Path, text: str) -> RuleSet:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(text)
    return load_rules(tmp_path / "rules", templates=Templates(), actions=ACTIONS)


def many(tmp_path: Path, *rules: str) -> RuleSet:
    return rules_from(tmp_path, "rules:\n" + "".join(f"  - {r}\n" for r in rules))


@pytest.fixture
def templates() -> Templates:
    return Templates()


# --- candidates ------------------------------------------------------------------------


def test_candidates_exact_glob_and_list_by_priority_then_id(tmp_path: Path) -> None:
    ruleset = many(
        tmp_path,
        "{id: b-exact, on: lytho.proof.status_changed}",
        "{id: a-exact, on: lytho.proof.status_changed}",
        "{id: glob, on: lytho.proof.*, priority: 5}",
        "{id: listed, on: [lytics.job.status_changed, 'lytho.*.status_changed'], priority: -1}",
        "{id: both, on: [lytho.proof.status_changed, lytho.*], priority: 1}",
        "{id: off, on: lytho.proof.status_changed, enabled: false, priority: 99}",
        "{id: other, on: lytho.asset.created}",
    )
    ids = [r.id for r in ruleset.candidates("lytho.proof.status_changed")]
    assert ids == ["glob", "both", "a-exact", "b-exact", "listed"]
    assert ruleset.candidates("lytho.proof.status_changed") is ruleset.candidates(
        "lytho.proof.status_changed"
    )  # cached
    assert [r.id for r in ruleset.candidates("lytics.job.status_changed")] == ["listed"]
    assert ruleset.candidates("shop.order.created") == ()
    assert len(ruleset) == 7
    assert ruleset.get("off") is not None


def test_glob_is_case_sensitive_and_crosses_dots(tmp_path: Path) -> None:
    ruleset = many(tmp_path, "{id: g, on: 'lytho.*'}")
    assert [r.id for r in ruleset.candidates("lytho.proof.status_changed")] == ["g"]
    assert ruleset.candidates("LYTHO.proof") == ()


# --- evaluate --------------------------------------------------------------------------


def test_design_example_matches_and_renders(tmp_path: Path, templates: Templates) -> None:
    ruleset = rules_from(tmp_path, PROOF_RULE)
    event = proof_event(asset={"id": "a1", "tags": []})
    (evaluation,) = ruleset.evaluate(event, templates)
    assert evaluation.matched
    assert evaluation.failing() is None
    rule = evaluation.rule
    context = event_context(event, rule, {"notify": {"ts": "1503435956.000247"}})
    rendered = [templates.render_value(step.with_, context) for step in rule.actions]
    assert rendered == [
        {"channel": "#creative", "text": "Proof 7 approved"},
        {
            "stream": "lytho_workflow",
            "data": {"event": "proof_approved", "proof_id": 7, "slack_ts": "1503435956.000247"},
        },
        {"asset_id": "a1", "tags": ["approved"]},
    ]
    assert should_run(rule.actions[2], context, templates) is True
    tagged = event_context(proof_event(asset={"id": "a1", "tags": ["approved"]}), rule)
    assert should_run(rule.actions[2], tagged, templates) is False
    assert should_run(rule.actions[0], tagged, templates) is True


def test_trace_shows_missing_and_type_mismatch(tmp_path: Path, templates: Templates) -> None:
    ruleset = rules_from(tmp_path, PROOF_RULE)
    event = proof_event(tags="hero-banner", priority=3)
    del event.data["status"]
    (evaluation,) = ruleset.evaluate(event, templates)
    assert not evaluation.matched
    trace = evaluation.to_dict()
    json.dumps(trace)  # JSON-able
    assert trace["rule"] == "proof-approved-to-slack"
    assert trace["matched"] is False
    changed, contains, alternatives = trace["conditions"]["children"]
    assert changed == {
        "op": "changed",
        "result": True,
        "path": "data.status",
        "expected": {"to": "approved"},
        "actual": {"from": "in_review", "to": "approved"},
        "line": 6,
    }
    assert contains["result"] is True  # substring of a string
    priority, due = alternatives["children"]
    assert priority["reason"] == "type mismatch: 3 is int, the values are str"
    assert due["op"] == "expr"
    assert due["reason"].startswith("missing: expression 'data.due_in_days < 3': ")
    assert "'data' has no attribute 'due_in_days'" in due["reason"]
    assert "actual" not in due


def test_missing_path_is_shown_as_missing(tmp_path: Path, templates: Templates) -> None:
    ruleset = many(tmp_path, "{id: r, on: t, when: [{path: data.asset.id, eq: 3}]}")
    event = Event(id="e", source="s", type="t", data={})
    (evaluation,) = ruleset.evaluate(event, templates)
    assert evaluation.failing().to_dict() == {  # type: ignore[union-attr]
        "op": "eq",
        "result": False,
        "path": "data.asset.id",
        "expected": 3,
        "reason": "missing",
        "line": 2,
    }


def test_stop_ends_matching_only_when_the_rule_matched(
    tmp_path: Path, templates: Templates
) -> None:
    ruleset = many(
        tmp_path,
        "{id: first, on: t, priority: 3, stop: true, when: [{path: data.n, gt: 10}]}",
        "{id: second, on: t, priority: 2, stop: true}",
        "{id: third, on: t, priority: 1}",
    )
    big = Event(id="e", source="s", type="t", data={"n": 11})
    small = Event(id="e", source="s", type="t", data={"n": 1})
    assert [(e.rule.id, e.matched) for e in ruleset.evaluate(big, templates)] == [("first", True)]
    assert [(e.rule.id, e.matched) for e in ruleset.evaluate(small, templates)] == [
        ("first", False),
        ("second", True),
    ]
    assert [r.id for r in ruleset.matching(small, templates)] == ["second"]


def test_expressions_see_rule_and_event(tmp_path: Path, templates: Templates) -> None:
    ruleset = many(
        tmp_path,
        "{id: r1, on: t, when: [\"rule.id == 'r1' and event.source == 's'\"]}",
        "{id: r2, on: t, when: [\"{{ rule.id == 'r1' }}\"]}",
        "{id: r3, on: t, when: ['data.items | length > 1']}",
    )
    event = Event(id="e", source="s", type="t", data={"items": [1, 2]})
    assert [(e.rule.id, e.matched) for e in ruleset.evaluate(event, templates)] == [
        ("r1", True),
        ("r2", False),
        ("r3", True),
    ]


def test_not_and_nesting(tmp_path: Path, templates: Templates) -> None:
    ruleset = rules_from(
        tmp_path,
        """\
id: r
on: t
when:
  - not: {path: data.status, eq: rejected}
  - not:
      - {path: data.a, eq: 1}
      - {path: data.b, eq: 2}
  - any:
      - all:
          - {path: data.c, exists: true}
          - {path: data.d, missing: true}
      - {path: data.e, eq: 5}
""",
    )

    def matched(**data: object) -> bool:
        return ruleset.evaluate(Event(id="e", source="s", type="t", data=data), templates)[
            0
        ].matched

    assert matched(status="ok", a=1, c=1)
    assert not matched(status="rejected", c=1)
    assert not matched(a=1, b=2, c=1)
    assert matched(a=1, b=3, e=5, c=1, d=1)
    assert not matched(c=1, d=1)


def test_conditions_are_compiled_once_not_per_event(
    tmp_path: Path, templates: Templates, monkeypatch: pytest.MonkeyPatch
) -> None:
    ruleset = rules_from(tmp_path, PROOF_RULE)
    compiled: list[str] = []
    original = jinja2.Environment.compile_expression

    def counting(self: jinja2.Environment, source: str, undefined_to_none: bool = True) -> object:
        compiled.append(source)
        return original(self, source, undefined_to_none)

    monkeypatch.setattr(jinja2.Environment, "compile_expression", counting)
    for n in range(50):
        ruleset.evaluate(proof_event(priority="low", due_in_days=n), templates)
    assert compiled == ["data.due_in_days < 3"]  # once for this Templates, then cached


def test_evaluation_trace_is_lazy_and_stable(tmp_path: Path, templates: Templates) -> None:
    ruleset = rules_from(tmp_path, PROOF_RULE)
    (evaluation,) = ruleset.evaluate(proof_event(), templates)
    assert evaluation.conditions is evaluation.conditions
    assert repr(evaluation) == "Evaluation('proof-approved-to-slack', matched=True)"


def test_trace_values_are_clipped(tmp_path: Path, templates: Templates) -> None:
    ruleset = many(tmp_path, "{id: r, on: t, when: [{path: data.big, contains: zzz}]}")
    event = Event(id="e", source="s", type="t", data={"big": ["x" * 1000] * 100})
    actual = ruleset.evaluate(event, templates)[0].to_dict()["conditions"]["children"][0]["actual"]
    assert len(actual) == 51
    assert actual[0] == "x" * 500 + "…"
    assert actual[-1] == "… 50 more"


# --- context and if: ---------------------------------------------------------------------


def test_event_context_holds_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    ruleset = rules_from(tmp_path, PROOF_RULE)
    rule = ruleset.rules[0]
    event = proof_event()
    context = event_context(event, rule, {"notify": {"ts": "1.2"}})
    assert set(context) == {
        "event",
        "data",
        "changes",
        "rule",
        "steps",
        "now",
        "vars",
        *("id", "type", "source", "subject", "time"),
    }
    assert context["event"] == {
        "id": "evt_1",
        "type": "lytho.proof.status_changed",
        "source": "lytho",
        "subject": "proof/7",
        "time": "2026-11-25T10:00:00.000Z",
    }
    assert context["rule"] == {
        "id": "proof-approved-to-slack",
        "description": "Tell #creative when a proof is approved",
    }
    assert context["steps"] == {"notify": {"ts": "1.2"}}
    before = datetime.now(UTC)
    now = context["now"]()
    assert now.tzinfo is UTC and before <= now <= datetime.now(UTC)  # the time it was called
    assert "xoxb-secret" not in json.dumps({k: v for k, v in context.items() if k != "now"})
    assert event_context(event)["rule"] == {}
    assert os.environ["SLACK_BOT_TOKEN"] == "xoxb-secret"


def test_should_run(templates: Templates) -> None:
    context = event_context(Event(id="e", source="s", type="t", data={"amount": 1500}))
    assert should_run(Step(index=0, uses="x"), context, templates)
    assert should_run(Step(index=0, uses="x", if_="data.amount > 1000"), context, templates)
    assert not should_run(
        Step(index=0, uses="x", if_="{{ data.amount > 2000 }}"), context, templates
    )
    with pytest.raises(TemplateError, match="'data' has no attribute 'asset'"):
        should_run(Step(index=0, uses="x", if_="data.asset.id"), context, templates)
