"""`choose` steps end to end: the first branch that holds runs (or default, or nothing), the
choice is in the trace and in `bridge trace`, and a retry goes on inside the branch chosen
the first time, even when the rule changed in between."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.actions import action_schemas
from bridge.rules.loader import check_rules
from bridge.templates.environment import Templates
from tests.helpers import Bridge, running_bridge, wait_for
from tests.test_rule_loops import Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


TOKEN = "choose-admin-token-0123456789abcdef"


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    env = {"BRIDGE_HTTP_ALLOW": "127.0.0.1", "BRIDGE_ADMIN_TOKEN": TOKEN}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
        b.start_web()
        yield b


ROUTE = """
rules:
  - id: route
    on: shop.order.paid
    actions:
      - id: decide
        choose:
          - when: [{path: data.kind, eq: big}]
            steps:
              - id: big
                uses: http.post
                with: {url: "SINK/big", json: {n: "{{ data.n }}"}}
          - when: "data.kind == 'many'"
            steps:
              - id: each
                for_each: "{{ data.items }}"
                uses: http.post
                with: {url: "SINK/items", json: {n: "{{ item }}"}}
              - choose:
                  - when: ["steps.each.count > 2"]
                    steps:
                      - uses: http.post
                        with: {url: "SINK/lots", json: {n: "{{ steps.each.count }}"}}
        default:
          - id: other
            uses: http.post
            with:
              url: "SINK/other"
              json: {n: "{{ data.n }}", branch: "{{ steps.decide.branch }}"}
      - id: after
        uses: http.post
        with: {url: "SINK/after", json: {n: "{{ data.n }}", branch: "{{ steps.decide.branch }}"}}
  - id: route-no-default
    on: shop.order.paid
    actions:
      - id: pick
        choose:
          - when: [{path: data.kind, eq: big}]
            steps:
              - uses: http.post
                with: {url: "SINK/only-big", json: {n: "{{ data.n }}"}}
"""


def paid(event_id: str, n: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "shop.order.paid", "data": {"n": n, "kind": kind, **data}}


def choice(bridge: Bridge, event_id: str, rule: str) -> list[dict[str, Any]]:
    return [
        e
        for e in bridge.trace(event_id)
        if e["kind"] == "step" and e.get("uses") == "choose" and e["rule"] == rule
    ]


def cli(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env={**os.environ, **bridge.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_first_branch_that_holds_runs_else_default_else_nothing(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("route.yaml", ROUTE.replace("SINK", sink.url))
    bridge.start_worker()
    events = [paid("c-1", 1, "big"), paid("c-2", 2, "many", items=[7, 8, 9]), paid("c-3", 3, "x")]
    assert bridge.post(events).status_code == 202
    for event in events:
        for rule in ("route", "route-no-default"):
            wait_for(
                lambda e=event, r=rule: bridge.trace_has(
                    e["id"], "run", rule=r, status="succeeded"
                ),  # type: ignore[misc]
                what=f"{rule} for {event['id']}",
            )
    posted = sorted((b["at"], b["n"]) for b in sink.received)
    assert posted == sorted(
        [
            ("big", 1),
            ("only-big", 1),
            ("after", 1),
            ("items", 7),
            ("items", 8),
            ("items", 9),
            ("lots", 3),
            ("after", 2),
            ("other", 3),
            ("after", 3),
        ]
    )
    # The steps after the choose, and those inside a branch, read the choice.
    assert {b["n"]: b["branch"] for b in sink.received if b["at"] == "after"} == {
        1: 0,
        2: 1,
        3: "default",
    }
    assert next(b for b in sink.received if b["at"] == "other")["branch"] == "default"
    [first] = choice(bridge, "c-1", "route")
    assert first["result"] == {"branch": 0, "when": [{"path": "data.kind", "eq": "big"}]}
    assert [t["holds"] for t in first["params"]["branches"]] == [True]
    [second, inner] = choice(bridge, "c-2", "route")
    assert second["result"] == {"branch": 1, "when": "data.kind == 'many'"}
    assert [t["holds"] for t in second["params"]["branches"]] == [False, True]
    assert inner["step"] == "decide.1.step1"
    assert inner["result"] == {"branch": 0, "when": ["steps.each.count > 2"]}
    [third] = choice(bridge, "c-3", "route")
    assert third["result"] == {"branch": "default"}
    [none] = choice(bridge, "c-3", "route-no-default")
    assert none["result"] == {"branch": None}
    # What `bridge trace` prints: the choice, and each branch tried with its conditions.
    shown = cli(bridge, "trace", "c-3")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "choose route/decide" in line)
    assert lines[at].endswith("choose route/decide  no branch holds: default runs")
    assert lines[at + 1 : at + 5] == [
        "        ✗ branch 0",
        "            ✗ data.kind eq 'big' (actual 'x': not equal)",
        "        ✗ branch 1",
        "            ✗ data.kind == 'many' (actual false: false)",
    ]
    assert any(
        line.endswith(
            "choose route-no-default/pick  no branch holds and there is no default: nothing runs"
        )
        for line in lines
    )
    second_shown = cli(bridge, "trace", "c-2").stdout
    assert "choose route/decide  branch 1 holds (when: \"data.kind == 'many'\"): its steps run" in (
        second_shown
    )
    assert "loop route/each http.post  over 3 items (for_each)" in second_shown
    # What the dashboard's event page lists among the steps (from the admin API).
    detail = httpx.get(
        f"{bridge.web_url}/api/events/c-2", headers={"authorization": f"Bearer {TOKEN}"}
    ).json()
    choices = {a["step"]: a["result"] for a in detail["actions"] if a["uses"] == "choose"}
    assert choices == {
        "decide": {"branch": 1, "when": "data.kind == 'many'"},
        "decide.1.step1": {"branch": 0, "when": ["steps.each.count > 2"]},
        "pick": {"branch": None},
    }
    items = [a["step"] for a in detail["actions"] if a["step"].startswith("each")]
    assert items == ["each[0]", "each[1]", "each[2]"]


RETRIED = """
id: retried
on: shop.order.paid
actions:
  - id: decide
    choose:
      - when: "WHEN"
        steps:
          - id: first
            uses: http.post
            with: {url: "SINK/first", json: {n: "{{ data.n }}"}}
          - id: second
            uses: http.post
            with: {url: "SINK/items", json: {n: "{{ data.n }}"}}
    default:
      - id: fallback
        uses: http.post
        with: {url: "SINK/fallback", json: {n: "{{ data.n }}"}}
"""


def test_a_retry_goes_on_inside_the_branch_chosen_first(bridge: Bridge, sink: Sink) -> None:
    """The second step of the chosen branch fails for good; the rule is then edited so the
    branch no longer holds. The retried run does not decide again: it resumes at that step."""
    bridge.write_rule(
        "retried.yaml", RETRIED.replace("SINK", sink.url).replace("WHEN", "data.n == 1")
    )
    sink.fail(1, 400)
    bridge.start_worker()
    assert bridge.post(paid("r-1", 1, "any")).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter of the second step")
    assert letter["step"] == "second"
    loads = bridge.worker_logs().count("loaded 1 rules")
    bridge.write_rule(
        "retried.yaml", RETRIED.replace("SINK", sink.url).replace("WHEN", "data.n == 2")
    )
    wait_for(
        lambda: bridge.worker_logs().count("loaded 1 rules") > loads,
        what="the worker to load the edited rule",
    )
    retried = cli(bridge, "dlq", "retry", letter["id"])
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: bridge.trace_has("r-1", "run", status="succeeded"), what="the resumed run")
    assert [(b["at"], b["n"]) for b in sink.answered] == [("first", 1), ("items", 1)]
    assert [b["at"] for b in sink.received] == ["first", "items", "items"]
    assert len(choice(bridge, "r-1", "retried")) == 1  # decided once


# -- validation: bridge validate's messages ------------------------------------------------


def problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "choose.yaml").write_text(text)
    checked = check_rules(tmp_path / "rules", templates=Templates(), actions=action_schemas())
    return [str(p).replace(str(tmp_path) + "/", "") for p in checked.errors]


def test_choose_mistakes_are_reported_with_their_places(tmp_path: Path) -> None:
    text = """\
id: branches
on: shop.order.paid
actions:
  - id: notify
    uses: http.post
    with: {url: "https://example.com"}
  - id: decide
    choose:
      - when: [{path: data.kind, eq: big}]
        step:
          - uses: http.post
            with: {url: "https://example.com"}
      - when: []
        steps:
          - id: notify
            uses: http.post
            with: {url: "https://example.com"}
      - steps: []
      - "data.kind == 'x'"
    defualt: []
  - default:
      - uses: http.post
        with: {url: "https://example.com"}
  - choose: {when: x}
  - choose:
      - when: "data.a"
        steps:
          - choose:
              - when: "data.b"
                steps:
                  - choose:
                      - when: "data.c"
                        steps:
                          - choose:
                              - when: "data.d"
                                steps:
                                  - {uses: http.post, with: {url: "https://example.com"}}
  - uses: http.post
    chose: []
    with: {url: "https://example.com/{{ steps.decide.branch }}/{{ steps.nothere.x }}"}
"""
    assert problems(tmp_path, text) == [
        "rules/choose.yaml:9:9: branch 0 of choose in rule 'branches' has no steps; expected "
        "steps: [a list of steps] (a branch that should do nothing can be left out)",
        "rules/choose.yaml:10:9: unknown key 'step' in branch 0 of choose in rule 'branches'; "
        "did you mean 'steps'? expected one of when, steps",
        "rules/choose.yaml:13:15: 'when' of branch 1 of choose in rule 'branches' is empty, so "
        "it always holds; put steps that always run in default:, or after the choose step",
        "rules/choose.yaml:15:17: duplicate step id 'notify' in rule 'branches' (first at line "
        "4); expected step ids unique within a rule",
        "rules/choose.yaml:18:9: branch 2 of choose in rule 'branches' has no 'when'; expected "
        "conditions as in a rule's when: (a list, or one expression); the steps for when no "
        "branch holds go in default:",
        "rules/choose.yaml:18:16: branch 2 of choose in rule 'branches' has no steps; expected "
        "steps: [a list of steps] (a branch that should do nothing can be left out)",
        "rules/choose.yaml:19:9: branch 3 of choose in rule 'branches' must be a mapping "
        "{when: […], steps: […]}, not string",
        "rules/choose.yaml:20:5: unknown key 'defualt' in choose step in rule 'branches'; did "
        "you mean 'default'? expected one of id, choose, default",
        "rules/choose.yaml:21:5: 'default' in rule 'branches' goes beside 'choose:' (the steps "
        "run when no branch holds); add choose: [- when: …, steps: …] or remove default",
        "rules/choose.yaml:24:13: 'choose' in rule 'branches' must be a list of branches "
        "(- when: […], steps: […]), not object",
        "rules/choose.yaml:34:29: choose in rule 'branches' is nested 4 deep; at most 3 levels "
        "of choose are allowed: combine the inner conditions with the outer ones",
        "rules/choose.yaml:39:5: unknown key 'chose' in step in rule 'branches'; did you mean "
        "'choose'? expected one of id, uses, with, if, retry, continue_on_error, for_each, as, "
        "max_items, choose",
        # Steps in branches can be read after the choose (those of the branch not taken are
        # undefined: test them with `is defined`).
        "rules/choose.yaml:40:17: with.url in rule 'branches' reads steps.nothere, which is "
        "not an earlier step; earlier steps: notify, decide, step2, step3, "
        "step4.0.step0.0.step0.0.step0, step4.0.step0.0.step0, step4.0.step0, step4",
    ]


# -- bridge test and bridge fire --dry-run: the loop's calls and the chosen branch ----------

CAMPAIGN = """
id: tag-campaign
on: shop.campaign.launched
actions:
  - id: find
    uses: http.post
    with: {url: "https://dam.example.com/search", json: {tag: "{{ data.tag }}"}}
  - id: decide
    choose:
      - when: "steps.find.body.assets | length > 0"
        steps:
          - id: tag
            for_each: "{{ steps.find.body.assets }}"
            as: asset
            uses: http.post
            with: {url: "https://dam.example.com/tag/{{ asset.id }}", json: {n: "{{ loop.index }}"}}
    default:
      - id: nothing
        uses: http.post
        with: {url: "https://dam.example.com/none"}
"""

CAMPAIGN_TESTS = """
cases:
  - name: each asset found is tagged, in order
    event: {type: shop.campaign.launched, data: {tag: spring}}
    steps: {find: {body: {assets: [{id: 4}, {id: 9}]}}}
    expect:
      actions:
        - {uses: http.post, step: find}
        - {uses: choose, step: decide, with: {branch: 0}}
        - {uses: http.post, step: "tag[0]", with: {url: "https://dam.example.com/tag/4"}}
        - {uses: http.post, step: "tag[1]", with: {json: {n: 2}}}
  - name: no asset found takes the default
    event: {type: shop.campaign.launched, data: {tag: spring}}
    steps: {find: {body: {assets: []}}}
    expect:
      actions:
        - {uses: http.post, step: find}
        - {uses: choose, with: {branch: default}}
        - {uses: http.post, step: nothing}
  - name: a wrong expectation of the branch fails
    event: {type: shop.campaign.launched, data: {tag: spring}}
    steps: {find: {body: {assets: []}}}
    expect:
      actions:
        - {uses: choose, with: {branch: 0}}
"""


def project(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "rules" / "campaign.yaml").write_text(CAMPAIGN)
    (tmp_path / "rules" / "tests" / "campaign.test.yaml").write_text(CAMPAIGN_TESTS)
    (tmp_path / "event.json").write_text(
        json.dumps({"id": "e-1", "type": "shop.campaign.launched", "data": {"tag": "spring"}})
    )
    return {
        **os.environ,
        "BRIDGE_RULES_DIR": str(tmp_path / "rules"),
        "BRIDGE_TEMPLATES_DIR": str(tmp_path / "templates"),
    }


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rule_tests_show_one_call_per_item_and_the_chosen_branch(tmp_path: Path) -> None:
    env = project(tmp_path)
    done = run_cli(env, "test")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.replace(str(tmp_path) + "/", "").splitlines()
    assert lines[:3] == [
        "ok    rules/tests/campaign.test.yaml:3: each asset found is tagged, in order",
        "ok    rules/tests/campaign.test.yaml:12: no asset found takes the default",
        "FAIL  rules/tests/campaign.test.yaml:20: a wrong expectation of the branch fails",
    ]
    assert lines[3].startswith(
        '      action 1 of expect.actions: expected {"uses": "choose", "with": {"branch": 0}}, '
        'got [{"rule": "tag-campaign", "step": "find", '
    )
    assert '"step": "decide", "uses": "choose", "with": {"branch": "default"}}' in lines[3]
    assert lines[-1] == "2 passed, 1 failed"


def test_fire_dry_run_shows_the_choice_and_the_loop(tmp_path: Path) -> None:
    env = project(tmp_path)
    shown = run_cli(env, "fire", "--dry-run", str(tmp_path / "event.json"))
    assert shown.returncode == 0, shown.stderr
    # Without the look-up's result, the loop's list is a placeholder: one call shows what
    # each item's will be.
    assert [line.strip() for line in shown.stdout.splitlines() if "→" in line] == [
        '→ find: http.post {"url": "https://dam.example.com/search", "json": {"tag": "spring"}}',
        '→ decide: choose {"branch": 0, "when": "steps.find.body.assets | length > 0"}',
        '→ tag[*]: http.post {"url": "https://dam.example.com/tag/<steps.find.body.assets[*].id>", '
        '"json": {"n": "<loop.index>"}}',
    ]
