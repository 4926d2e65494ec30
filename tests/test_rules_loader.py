"""Loading rule files: the format, defaults, and every error reported with its place."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.errors import RuleError
from bridge.operate.catalogue import event_catalogue
from bridge.rules import Dedupe, RuleSet, Throttle, load_rules, parse_duration, rule_files
from bridge.rules.loader import check_rules
from bridge.rules.operators import OperandError
from bridge.schema import ActionSchema, Param
from bridge.templates.environment import Templates

CORPUS = Path(__file__).parent / "rules" / "invalid"

DESIGN_EXAMPLE = """\
id: proof-approved-to-slack              # unique across all files; used in traces and tests
description: Tell #creative when a proof is approved
enabled: true
priority: 100                            # higher first; `stop: true` ends matching for the event
on: lytho.proof.status_changed           # event type, a glob (lytho.proof.*), or a list
when:                                    # all must hold; all/any/not nest
  - {path: data.status, changed: {to: approved}}
  - {path: data.tags, contains: hero}
  - any:
      - {path: data.priority, in: [high, urgent]}
      - data.due_in_days < 3             # a bare string is a sandboxed Jinja expression
dedupe:   {key: "{{ data.id }}", ttl: 24h}          # at most once per key while the key lives
throttle: {key: "#creative", limit: 20, per: 1h}    # at most `limit` runs per window
actions:                                 # run in order, each step once
  - id: notify
    uses: slack.post
    with:
      channel: "#creative"
      template: proof_approved.json.j2   # from templates/ (Block Kit JSON), or `text:`
  - uses: lytics.collect
    with:
      stream: lytho_workflow
      data: {event: proof_approved, proof_id: "{{ data.id }}", slack_ts: "{{ steps.notify.ts }}"}
  - uses: lytho.tag_asset
    if: "'approved' not in data.asset.tags"
    with: {asset_id: "{{ data.asset.id }}", tags: [approved]}
"""


def action_schemas() -> dict[str, ActionSchema]:
    return {
        "slack.post": ActionSchema(
            "slack.post",
            "Post a Slack message",
            {
                "channel": Param("channel", required=True),
                "text": Param("text"),
                "template": Param("template"),
                "blocks": Param("blocks", types=("array",)),
                "thread_ts": Param("thread_ts"),
            },
            one_of=(("text", "template", "blocks"),),
        ),
        "lytics.collect": ActionSchema(
            "lytics.collect",
            "Send data to a Lytics stream",
            {
                "stream": Param("stream", required=True),
                "data": Param("data", types=("object", "array"), required=True),
            },
        ),
        "lytho.tag_asset": ActionSchema(
            "lytho.tag_asset",
            "Add tags to a Lytho asset",
            {
                "asset_id": Param("asset_id", types=("string", "integer"), required=True),
                "tags": Param("tags", types=("array",), required=True),
            },
        ),
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with rules/ and templates/, as a deployment has them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "proof_approved.json.j2").write_text('{"text": "{{ data.name }}"}\n')
    return tmp_path


def load(workdir: Path) -> RuleSet:
    return load_rules(
        Path("rules"), templates=Templates(Path("templates")), actions=action_schemas()
    )


def write(workdir: Path, name: str, text: str) -> None:
    path = workdir / "rules" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def problems(workdir: Path) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load(workdir)
    return [str(p) for p in caught.value.problems]


# --- the corpus of bad rule files ------------------------------------------------------


def corpus_cases() -> list[str]:
    return sorted(p.stem for p in CORPUS.glob("*.expected"))


def test_corpus_is_complete() -> None:
    assert len(corpus_cases()) >= 15
    for stem in corpus_cases():
        assert (CORPUS / f"{stem}.yaml").is_file() or (CORPUS / stem).is_dir(), stem


@pytest.mark.parametrize("case", corpus_cases())
def test_invalid_rule_file_is_refused_with_exact_messages(workdir: Path, case: str) -> None:
    source = CORPUS / case
    if source.is_dir():
        for path in source.iterdir():
            shutil.copy(path, workdir / "rules" / path.name)
    else:
        shutil.copy(CORPUS / f"{case}.yaml", workdir / "rules" / f"{case}.yaml")
    expected = (CORPUS / f"{case}.expected").read_text().splitlines()
    assert corpus_problems() == expected


def corpus_problems() -> list[str]:
    """Errors and warnings, each file's in line order, as `bridge validate` prints them."""
    checked = check_rules(
        Path("rules"),
        templates=Templates(Path("templates")),
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    found = sorted(checked.errors + checked.warnings, key=lambda p: (p.file, p.line, p.column))
    return [str(p) for p in found]


def test_rule_error_message_lists_every_problem_with_its_place(workdir: Path) -> None:
    write(workdir, "a.yaml", "id: a\non: x\nwhen:\n  - {path: data.x, equals: 1}\n")
    write(workdir, "b.yaml", "id: b\non: x\npriority: high\n")
    with pytest.raises(RuleError, match=r"rules/a\.yaml:4:20: unknown operator 'equals'") as caught:
        load(workdir)
    assert str(caught.value).splitlines() == [
        "rules/a.yaml:4:20: unknown operator 'equals' in rule 'a'; did you mean 'eq'? "
        "expected one of eq, ne, in, not_in, contains, not_contains, startswith, endswith, "
        "regex, exists, missing, gt, gte, lt, lte, changed",
        "rules/b.yaml:3:11: 'priority' in rule 'b' must be an integer, not string 'high'",
    ]


def test_unknown_key_without_a_near_miss_lists_the_expected_keys(workdir: Path) -> None:
    write(workdir, "a.yaml", "id: a\non: x\nzzz: 1\n")
    assert problems(workdir) == [
        "rules/a.yaml:3:1: unknown key 'zzz' in rule 'a'; expected one of id, description, "
        "enabled, priority, stop, on, when, dedupe, throttle, digest, for, actions"
    ]


def test_a_file_outside_the_working_directory_keeps_its_absolute_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "elsewhere" / "rules"
    rules.mkdir(parents=True)
    (rules / "a.yaml").write_text("id: a\n")
    monkeypatch.chdir(tmp_path / "elsewhere" / "rules")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(RuleError) as caught:
        load_rules(rules, templates=Templates(), actions={})
    assert str(caught.value) == f"{rules.as_posix()}/a.yaml:1:1: rule 'a' has no 'on'; " + (
        "expected an event type, a glob such as lytho.proof.*, or a list of them"
    )


def test_a_yaml_alias_bomb_is_refused(workdir: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 7):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    write(workdir, "bomb.yaml", "\n".join(levels) + "\n")
    found = problems(workdir)
    assert any(p.endswith(": file has more than 100000 values (aliases?)") for p in found)


# --- what a valid file becomes ---------------------------------------------------------


def test_design_example_loads_with_every_field(workdir: Path) -> None:
    write(workdir, "creative.yaml", DESIGN_EXAMPLE)
    ruleset = load(workdir)
    rule = ruleset.get("proof-approved-to-slack")
    assert rule is not None
    # DESIGN.md's example leaves the description unquoted, so YAML reads " #creative…" as a
    # comment: the description really is "Tell". (Quote such values in examples.)
    assert rule.description == "Tell"
    assert (rule.enabled, rule.priority, rule.stop) == (True, 100, False)
    assert rule.on == ("lytho.proof.status_changed",)
    assert rule.dedupe == Dedupe(key="{{ data.id }}", ttl_seconds=86400)
    assert rule.throttle == Throttle(key="#creative", limit=20, per_seconds=3600)
    assert (rule.file, rule.line) == ("rules/creative.yaml", 1)
    notify, collect, tag = rule.actions
    assert (notify.index, notify.id, notify.key, notify.uses) == (
        0,
        "notify",
        "notify",
        "slack.post",
    )
    assert notify.with_ == {"channel": "#creative", "template": "proof_approved.json.j2"}
    assert (collect.id, collect.key, collect.if_) == (None, "step1", None)
    assert collect.with_["data"]["slack_ts"] == "{{ steps.notify.ts }}"
    assert tag.if_ == "'approved' not in data.asset.tags"
    assert (tag.attempts, tag.backoff_seconds, tag.continue_on_error) == (5, 2.0, False)
    assert [c.op for c in rule.when.children] == ["changed", "contains", "any"]  # type: ignore[attr-defined]


def test_defaults_of_a_minimal_rule(workdir: Path) -> None:
    write(workdir, "a.yaml", "id: a\non: x\n")
    (rule,) = load(workdir).rules
    assert (rule.description, rule.enabled, rule.priority, rule.stop) == ("", True, 0, False)
    assert (rule.dedupe, rule.throttle, rule.actions) == (None, None, ())


def test_yaml_1_1_words_stay_strings_and_dates_stay_text(workdir: Path) -> None:
    write(
        workdir,
        "a.yaml",
        "id: a\non: x\nwhen:\n  - {path: data.answer, eq: no}\n"
        "  - {path: data.day, eq: 2024-01-31}\n"
        "actions:\n  - uses: slack.post\n    with: {channel: off, text: yes}\n",
    )
    (rule,) = load(workdir).rules
    assert rule.on == ("x",)
    assert [c.expected for c in rule.when.children] == ["no", "2024-01-31"]  # type: ignore[attr-defined]
    assert rule.actions[0].with_ == {"channel": "off", "text": "yes"}


def test_rules_list_and_several_files(workdir: Path) -> None:
    write(workdir, "a.yaml", "rules:\n  - {id: a1, on: x}\n  - {id: a2, on: [y, z.*]}\n")
    write(workdir, "nested/deeper/b.yml", "id: b\non: x\n")
    ruleset = load(workdir)
    assert [r.id for r in ruleset.rules] == ["a1", "a2", "b"]
    assert ruleset.get("a2").on == ("y", "z.*")  # type: ignore[union-attr]
    assert ruleset.get("nope") is None


def test_rule_tests_and_hidden_files_are_not_rules(workdir: Path) -> None:
    write(workdir, "a.yaml", "id: a\non: x\n")
    write(workdir, "a.test.yaml", "cases: []\n")
    write(workdir, "tests/more.yaml", "cases: []\n")
    write(workdir, "sub/tests/more.yml", "cases: []\n")
    write(workdir, ".hidden/c.yaml", "id: c\n")
    write(workdir, "notes.txt", "id: d\n")
    assert [p.name for p in rule_files(Path("rules"))] == ["a.yaml"]
    assert [r.id for r in load(workdir).rules] == ["a"]


def test_empty_directory_and_empty_file_give_no_rules(workdir: Path) -> None:
    assert load(workdir).rules == ()
    write(workdir, "empty.yaml", "# nothing yet\n")
    assert len(load(workdir)) == 0


def test_missing_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuleError, match="rules:1:1: rules directory 'rules' does not exist"):
        load_rules(Path("rules"), templates=Templates(), actions={})


def test_step_options(workdir: Path) -> None:
    write(
        workdir,
        "a.yaml",
        """\
id: a
on: x
throttle: {limit: 3, per: 90}
actions:
  - uses: lytho.tag_asset
    if: true
    retry: {attempts: 2, backoff: 1m30s}
    continue_on_error: true
    with: {asset_id: 7, tags: [approved]}
""",
    )
    (rule,) = load(workdir).rules
    (step,) = rule.actions
    assert (step.if_, step.attempts, step.backoff_seconds, step.continue_on_error) == (
        "true",
        2,
        90.0,
        True,
    )
    assert rule.throttle == Throttle(key="a", limit=3, per_seconds=90)


def test_templated_values_skip_the_type_check(workdir: Path) -> None:
    write(
        workdir,
        "a.yaml",
        "id: a\non: x\nactions:\n  - uses: lytho.tag_asset\n"
        '    with: {asset_id: "{{ data.id }}", tags: "{{ data.tags }}"}\n',
    )
    assert load(workdir).rules[0].actions[0].with_["tags"] == "{{ data.tags }}"


def test_a_broken_rule_does_not_hide_problems_of_others(workdir: Path) -> None:
    write(
        workdir, "a.yaml", "rules:\n  - {id: a, on: x, stop: 1}\n  - {id: b, on: x, enabled: 2}\n"
    )
    assert problems(workdir) == [
        "rules/a.yaml:2:26: 'stop' in rule 'a' must be true or false, not integer 1",
        "rules/a.yaml:3:29: 'enabled' in rule 'b' must be true or false, not integer 2",
    ]


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("45", 45.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
    ],
)
def test_parse_duration(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize("given", ["", "soon", "5 minutes", "5x", "-5s", 0, -1, True, None, "inf"])
def test_parse_duration_refuses(given: object) -> None:
    with pytest.raises(OperandError):
        parse_duration(given)
