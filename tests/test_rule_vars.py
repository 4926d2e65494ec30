"""Variables in templates: `vars:` in rule files, rules/vars.yaml, `${BRIDGE_VAR_*}` (16.5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.actions import action_schemas
from bridge.cli.main import main
from bridge.errors import RuleError
from bridge.events import Event
from bridge.operate.catalogue import event_catalogue
from bridge.rules import RuleSet, load_rules
from bridge.rules.dryrun import render_actions
from bridge.rules.live import LiveRules
from bridge.templates.environment import Templates
from tests.helpers import Bridge, running_bridge, wait_for

PROOF_RULE = """\
vars:
  app_url: https://acc.lytho.example
rules:
  - id: proof-link
    on: lytho.proof.status_changed
    actions:
      - id: notify
        uses: slack.post
        with:
          channel: "{{ vars.channel }}"
          text: "Proof {{ data.name }}: {{ vars.app_url }}/proofs/{{ data.id }}"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    for name in ("BRIDGE_VAR_LYTHO_APP_URL", "BRIDGE_VAR_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write(project: Path, name: str, text: str) -> None:
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def load(project: Path) -> tuple[RuleSet, Templates]:
    templates = Templates(Path("templates"))
    ruleset = load_rules(
        Path("rules"), templates=templates, actions=action_schemas(), event_types=event_catalogue()
    )
    return ruleset, templates


def problems(project: Path) -> list[str]:
    with pytest.raises(RuleError) as raised:
        load(project)
    return [str(p) for p in raised.value.problems]


def proof(event_id: str = "e-1", **data: object) -> Event:
    return Event.from_dict(
        {
            "id": event_id,
            "type": "lytho.proof.status_changed",
            "source": "lytho",
            "data": {"id": 7, "name": "Flyer", "status": "approved", **data},
        }
    )


def rendered(project: Path, event: Event | None = None) -> dict[str, list[dict[str, object]]]:
    """Each matched rule's steps, rendered as a dry run renders them."""
    ruleset, templates = load(project)
    event = event or proof()
    out = {}
    for rule in ruleset.matching(event, templates):
        out[rule.id] = [dict(a.with_) for a in render_actions(event, rule, templates)]
    return out


# --- where vars come from ---------------------------------------------------------------


def test_file_vars_and_project_vars_render_and_the_file_wins(project: Path) -> None:
    write(project, "rules/vars.yaml", "channel: '#creative'\napp_url: https://app.lytho.example\n")
    write(project, "rules/proof.yaml", PROOF_RULE)
    write(
        project,
        "rules/other.yaml",
        PROOF_RULE.replace("  app_url: https://acc.lytho.example\n", "").replace(
            "proof-link", "other-link"
        ),
    )
    out = rendered(project)
    assert out["proof-link"] == [
        {"channel": "#creative", "text": "Proof Flyer: https://acc.lytho.example/proofs/7"}
    ]
    # A file without its own app_url reads the project's.
    assert out["other-link"][0]["text"] == "Proof Flyer: https://app.lytho.example/proofs/7"


def test_a_one_rule_file_takes_vars_at_its_top(project: Path) -> None:
    write(
        project,
        "rules/one.yaml",
        """\
vars: {channel: "#creative", app_url: "https://acc.lytho.example"}
id: proof-link
on: lytho.proof.status_changed
actions:
  - uses: slack.post
    with: {channel: "{{ vars.channel }}", text: "{{ vars.app_url }}/proofs/{{ data.id }}"}
""",
    )
    assert rendered(project)["proof-link"] == [
        {"channel": "#creative", "text": "https://acc.lytho.example/proofs/7"}
    ]


def test_vars_inside_a_rule_are_refused_with_where_they_go(project: Path) -> None:
    write(
        project,
        "rules/proof.yaml",
        """\
rules:
  - id: proof-link
    vars: {channel: "#creative"}
    on: lytho.proof.status_changed
    actions: []
""",
    )
    assert problems(project) == [
        "rules/proof.yaml:3:5: 'vars' goes at the top of the file, beside 'rules:', not inside "
        "a rule; its variables are for every rule of the file"
    ]


def test_vars_yaml_is_not_read_as_a_rule_file_and_its_problems_have_places(
    project: Path,
) -> None:
    write(
        project,
        "rules/vars.yaml",
        "app_url: https://x\nbad-name: 1\nmsg: 'Hi {{ data.name }}'\nchannel: #creative\n",
    )
    write(project, "rules/proof.yaml", PROOF_RULE)
    assert problems(project) == [
        "rules/vars.yaml:2:1: variable name 'bad-name' is not valid; expected letters, digits "
        "and '_', starting with a letter (it is read as vars.<name>)",
        "rules/vars.yaml:3:6: vars.msg is a template; variables are plain values, rendered as "
        "written (put the template in the rule and read the variable there)",
        "rules/vars.yaml:4:9: vars.channel is empty: '#creative' after 'channel:' is a "
        "YAML comment, not the value (' #' starts a comment); quote it: "
        'channel: "#creative"',
    ]


# --- values from the environment --------------------------------------------------------

ENV_RULE = PROOF_RULE.replace(
    "app_url: https://acc.lytho.example", 'app_url: "${BRIDGE_VAR_LYTHO_APP_URL}"'
)


def test_a_bridge_var_from_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_VAR_LYTHO_APP_URL", "https://prod.lytho.example")
    write(project, "rules/vars.yaml", 'channel: "${BRIDGE_VAR_CHANNEL:-#creative}"\n')
    write(project, "rules/proof.yaml", ENV_RULE)
    assert rendered(project)["proof-link"] == [
        {"channel": "#creative", "text": "Proof Flyer: https://prod.lytho.example/proofs/7"}
    ]


def test_an_unset_bridge_var_with_a_default_takes_the_default(project: Path) -> None:
    write(project, "rules/vars.yaml", "channel: '#c'\n")
    write(
        project,
        "rules/proof.yaml",
        ENV_RULE.replace("LYTHO_APP_URL}", "LYTHO_APP_URL:-https://test.lytho.example}"),
    )
    assert rendered(project)["proof-link"][0]["text"] == (
        "Proof Flyer: https://test.lytho.example/proofs/7"
    )


def test_an_unset_bridge_var_without_a_default_is_a_load_error(project: Path) -> None:
    write(project, "rules/vars.yaml", "channel: '#c'\n")
    write(project, "rules/proof.yaml", ENV_RULE)
    assert problems(project) == [
        "rules/proof.yaml:2:12: vars.app_url reads ${BRIDGE_VAR_LYTHO_APP_URL}, which is not "
        "set; set BRIDGE_VAR_LYTHO_APP_URL in the environment or give a default: "
        "${BRIDGE_VAR_LYTHO_APP_URL:-…}"
    ]


@pytest.mark.parametrize("name", ["LYTHO_API_KEY", "SLACK_BOT_TOKEN", "HOME", "BRIDGE_VAR_"])
def test_any_other_environment_variable_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("LYTHO_API_KEY", "secret-key-123")
    write(project, "rules/vars.yaml", f'channel: "#c"\nkey: "token ${{{name}}}"\n')
    write(project, "rules/proof.yaml", PROOF_RULE)
    assert problems(project) == [
        f"rules/vars.yaml:2:6: refused: vars.key reads ${{{name}}}; vars may read only "
        "environment variables named BRIDGE_VAR_* (vars are never secrets)"
    ]


def test_a_literal_dollar_brace_is_written_with_two_dollars(project: Path) -> None:
    write(project, "rules/vars.yaml", "channel: '#c'\napp_url: 'https://x/$${id} costs $5'\n")
    write(
        project,
        "rules/proof.yaml",
        PROOF_RULE.replace("  app_url: https://acc.lytho.example\n", ""),
    )
    assert (
        rendered(project)["proof-link"][0]["text"]
        == "Proof Flyer: https://x/${id} costs $5/proofs/7"
    )


# --- unknown variables ------------------------------------------------------------------


def test_an_unknown_variable_is_reported_with_its_place_and_a_suggestion(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(project, "rules/vars.yaml", "channel: '#c'\n")
    write(project, "rules/proof.yaml", PROOF_RULE.replace("vars.app_url", "vars.ap_url"))
    assert main(["validate"]) == 1
    out, err = capsys.readouterr()
    assert (out + err).splitlines()[0] == (
        "rules/proof.yaml:11:17: invalid template in with.text in rule 'proof-link': "
        "vars.ap_url is not defined; did you mean vars.app_url?"
    )


def test_an_unknown_variable_with_no_near_name_lists_the_defined_ones(project: Path) -> None:
    write(project, "rules/vars.yaml", "channel: '#c'\n")
    write(project, "rules/proof.yaml", PROOF_RULE.replace("vars.app_url", "vars.zzz"))
    assert problems(project) == [
        "rules/proof.yaml:11:17: invalid template in with.text in rule 'proof-link': "
        "vars.zzz is not defined; defined for this file: app_url, channel"
    ]


def test_a_key_inside_a_mapping_variable_is_checked_too(project: Path) -> None:
    # The worker fails on `vars.channels.opz` as on `vars.chanel`: validate tells both.
    write(project, "rules/vars.yaml", "channel: '#c'\nchannels: {ops: '#ops', sales: '#s'}\n")
    rule = PROOF_RULE.replace(
        'channel: "{{ vars.channel }}"',
        "channel: \"{{ vars.channels.opz }}{{ vars.channels['sales'] }}"
        '{{ vars.channel.upper() }}"',
    ).replace("{{ vars.app_url }}", "{{ vars.channels.zzz }}{{ vars.channels.items() | list }}")
    write(project, "rules/proof.yaml", rule)
    assert problems(project) == [
        "rules/proof.yaml:10:20: invalid template in with.channel in rule 'proof-link': "
        "vars.channels.opz is not defined; did you mean vars.channels.ops?",
        "rules/proof.yaml:11:17: invalid template in with.text in rule 'proof-link': "
        "vars.channels.zzz is not defined; vars.channels has ops, sales",
    ]


def test_a_guarded_key_or_variable_is_no_problem(project: Path) -> None:
    # `default` and `is defined` stand for a missing last name, in the worker as here; what
    # a guarded path reads on its way must still be there.
    write(project, "rules/vars.yaml", "channel: '#c'\nchannels: {ops: '#ops'}\n")
    rule = PROOF_RULE.replace(
        'channel: "{{ vars.channel }}"',
        'channel: "{{ vars.channels.marketing | default(vars.channels.ops) }}"',
    ).replace(
        "{{ vars.app_url }}",
        "{% if vars.channels.beta is defined %}beta{% endif %}{{ vars.maybe | d('-') }}"
        "{{ vars.chanels.x | default('?') }}",
    )
    write(project, "rules/proof.yaml", rule)
    assert problems(project) == [
        "rules/proof.yaml:11:17: invalid template in with.text in rule 'proof-link': "
        "vars.chanels is not defined; did you mean vars.channels?",
    ]


def test_a_variable_of_another_file_is_not_defined_here(project: Path) -> None:
    write(project, "rules/proof.yaml", PROOF_RULE)  # defines app_url, reads channel
    assert problems(project) == [
        "rules/proof.yaml:10:20: invalid template in with.channel in rule 'proof-link': "
        "vars.channel is not defined; defined for this file: app_url"
    ]


# --- vars in every kind of template -----------------------------------------------------

WHEN_RULE = """\
vars: {env: production, channel: "#creative", app_url: "https://app"}
rules:
  - id: only-in-production
    on: lytho.proof.status_changed
    when:
      - vars.env == "production"
    dedupe: {key: "{{ vars.env }}-{{ data.id }}", ttl: 1h}
    actions:
      - uses: slack.post
        with: {channel: "{{ vars.channel }}", template: proof.j2}
"""


def test_vars_in_when_in_a_template_file_and_in_a_dedupe_key(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(project, "templates/proof.j2", "Open {{ vars.app_url }}/proofs/{{ data.id }}")
    write(project, "rules/proof.yaml", WHEN_RULE)
    write(
        project,
        "rules/tests/proof.test.yaml",
        """\
cases:
  - name: a second event of the same proof is deduplicated by the var-keyed dedupe
    events:
      - {type: lytho.proof.status_changed, id: a, data: {id: 7}}
      - {type: lytho.proof.status_changed, id: b, data: {id: 7}}
    expect:
      suppressed: {only-in-production: "key 'production-7' already ran"}
  - name: the template file reads the var
    event: {type: lytho.proof.status_changed, data: {id: 7}}
    expect:
      actions:
        - {uses: slack.post, with: {channel: "#creative"}, rendered: "Open https://app/proofs/7"}
""",
    )
    assert main(["test"]) == 0, capsys.readouterr().out
    # The condition reads the var: another value, no match.
    write(project, "rules/proof.yaml", WHEN_RULE.replace("env: production", "env: staging"))
    assert rendered(project) == {}


def test_unknown_vars_in_when_dedupe_and_a_template_file_are_reported(project: Path) -> None:
    write(project, "templates/proof.j2", "Open\n{{ vars.ap_url }}/proofs/{{ data.id }}")
    write(
        project,
        "rules/proof.yaml",
        WHEN_RULE.replace('vars.env == "production"', 'vars.evn == "production"').replace(
            '"{{ vars.env }}-', "\"{{ vars['chanel'] }}-"
        ),
    )
    assert problems(project) == [
        "rules/proof.yaml:6:9: invalid expression 'vars.evn == \"production\"' in rule "
        "'only-in-production': vars.evn is not defined; did you mean vars.env?",
        "rules/proof.yaml:7:19: invalid template in dedupe.key in rule 'only-in-production': "
        "vars.chanel is not defined; did you mean vars.channel?",
        "rules/proof.yaml:10:57: templates/proof.j2:2: vars.ap_url is not defined; did you "
        "mean vars.app_url? (rule 'only-in-production')",
    ]


def test_fire_dry_run_shows_the_vars_rendered(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_VAR_LYTHO_APP_URL", "https://prod.lytho.example")
    write(project, "rules/vars.yaml", "channel: '#creative'\n")
    write(project, "rules/proof.yaml", ENV_RULE)
    write(project, "event.json", json.dumps(proof().to_dict()))
    assert main(["fire", "--dry-run", "event.json"]) == 0
    out, _ = capsys.readouterr()
    assert "Proof Flyer: https://prod.lytho.example/proofs/7" in out


# --- hot reload -------------------------------------------------------------------------


def test_a_change_of_vars_yaml_reloads_the_rules(project: Path) -> None:
    write(project, "rules/vars.yaml", "channel: '#creative'\napp_url: https://a\n")
    write(
        project,
        "rules/proof.yaml",
        PROOF_RULE.replace("  app_url: https://acc.lytho.example\n", ""),
    )
    live = LiveRules(Path("rules"), Path("templates"), actions=action_schemas())
    assert live.load()
    assert live.current is not None
    [before] = live.current.rules
    assert before.vars["app_url"] == "https://a"
    write(project, "rules/vars.yaml", "channel: '#creative'\napp_url: https://b.example\n")
    assert live.reload_if_changed()
    assert live.current is not None
    [rule] = live.current.rules
    [action] = render_actions(proof(), rule, live.templates)
    assert action.with_["text"] == "Proof Flyer: https://b.example/proofs/7"
    # A broken vars.yaml keeps the last good set and says why.
    write(project, "rules/vars.yaml", "channel: '#creative'\n")
    assert not live.reload_if_changed()
    assert live.current.rules == (rule,)
    assert live.problems == [
        "rules/proof.yaml:10:17: invalid template in with.text in rule 'proof-link': "
        "vars.app_url is not defined; defined for this file: channel"
    ]


# --- end to end -------------------------------------------------------------------------


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.start_slack()
        b.start_web()
        yield b


def test_the_worker_posts_a_message_with_vars_from_the_file_the_project_and_the_environment(
    bridge: Bridge,
) -> None:
    bridge.write_rule("vars.yaml", 'channel: "#creative"\n')
    bridge.write_rule("proof.yaml", ENV_RULE)
    bridge.start_worker({"BRIDGE_VAR_LYTHO_APP_URL": "https://prod.lytho.example"})
    event = {"id": "v-1", "type": "lytho.proof.status_changed", "data": {"id": 7, "name": "Flyer"}}
    assert bridge.post(event).status_code == 202
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="a Slack message")
    assert [m["text"] for m in messages] == ["Proof Flyer: https://prod.lytho.example/proofs/7"]
    # The run's end is traced after its message was posted: wait for it.
    run = wait_for(lambda: bridge.trace_has("v-1", "run", rule="proof-link"), what="the run's end")
    assert run["status"] == "succeeded"
