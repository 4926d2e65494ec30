"""`bridge doctor` for Lytics: the token, the account, the streams rules collect to (operate).

The streams are the literal `stream:` values of `lytics.collect` steps in the rules
(BRIDGE_RULES_DIR); lytics-openapi.yaml lists data models ("stream schemas") at
`GET /api/datamodel`, which is what they are checked against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.operate.doctor_probe import FAIL, LYTICS, OK, UNKNOWN, Check, Halt, Probe, unreachable
from bridge.settings import Settings

COLLECT = "lytics.collect"


@dataclass
class Streams:
    """The streams the rules collect to: literal names (→ rule ids) and templated ones."""

    literal: dict[str, list[str]] = field(default_factory=dict)
    templated: list[tuple[str, str]] = field(default_factory=list)  # (rule id, as written)
    problem: str = ""  # the rules did not load


def _steps(steps: Iterable[Any]) -> Iterable[Any]:
    """Every step, including those nested in `choose` branches or `for_each` bodies."""
    for step in steps:
        yield step
        for name in ("steps", "default"):
            nested = getattr(step, name, None)
            if isinstance(nested, list | tuple):
                yield from _steps(nested)
        for branch in getattr(step, "branches", None) or ():
            yield from _steps(getattr(branch, "steps", ()) or ())


def rule_streams(settings: Settings) -> Streams:
    """The streams of the `lytics.collect` steps in the rules folder."""
    from bridge.actions import action_schemas
    from bridge.operate.catalogue import event_catalogue
    from bridge.rules.loader import check_rules
    from bridge.templates.environment import Templates

    found = Streams()
    if not settings.rules_dir.is_dir():
        found.problem = (
            f"no rules folder {settings.rules_dir} (BRIDGE_RULES_DIR) here: the streams your "
            "rules collect to cannot be checked; run bridge doctor where the rules are"
        )
        return found
    folder = settings.templates_dir
    checked = check_rules(
        settings.rules_dir,
        templates=Templates(folder),
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    if checked.ruleset is None:
        count = len(checked.errors)
        found.problem = (
            f"the rules in {settings.rules_dir} do not load ({count} problem"
            f"{'s' if count != 1 else ''}; bridge validate lists them)"
        )
        return found
    for rule in checked.ruleset.rules:
        for step in _steps(rule.actions):
            if step.uses != COLLECT:
                continue
            stream = step.with_.get("stream") if isinstance(step.with_, Mapping) else None
            if isinstance(stream, str) and "{{" not in stream and "{%" not in stream:
                found.literal.setdefault(stream, []).append(rule.id)
            else:
                found.templated.append((rule.id, str(stream)))
    return found


def lytics_plan(streams: Streams) -> int:
    """The most requests the Lytics checks send: the accounts, and the data models."""
    return 1 + (1 if streams.literal else 0)


async def check_lytics(probe: Probe, streams: Streams) -> list[Check]:
    checks: list[Check] = []
    try:
        await _account(probe, checks)
        await _streams(probe, streams, checks)
    except Halt as halt:
        checks.append(halt.check)
    return checks


async def _account(probe: Probe, checks: list[Check]) -> None:
    answer = await probe.get("api/account")
    if answer.status == 0:
        raise unreachable(LYTICS, answer, "LYTICS_API_URL")
    if answer.status in (401, 403):
        raise Halt(
            Check(
                LYTICS,
                "lytics.auth",
                "authentication",
                FAIL,
                f"{answer.shown()}: the token in the Authorization header was refused",
                "a 2xx answer; check LYTICS_API_TOKEN (sent without 'Bearer')",
            )
        )
    if answer.ok and not answer.is_json:  # a login page or a wrong URL's page
        saw = answer.not_json("LYTICS_API_URL")
        raise Halt(Check(LYTICS, "lytics.auth", "authentication", FAIL, saw))
    data = answer.body.get("data") if isinstance(answer.body, dict) else None
    if not answer.ok or not isinstance(data, list):
        said = answer.message()
        raise Halt(
            Check(
                LYTICS,
                "lytics.account",
                "account",
                FAIL,
                f"{answer.shown()}" + (f": {said}" if said else "") + " (no list of accounts)",
                "{data: [accounts]}; check LYTICS_API_URL",
            )
        )
    checks.append(
        Check(
            LYTICS,
            "lytics.auth",
            "authentication",
            OK,
            f"the token in the Authorization header was accepted ({answer.shown()})",
        )
    )
    accounts = [a for a in data if isinstance(a, dict)]
    if not accounts:
        checks.append(
            Check(LYTICS, "lytics.account", "account", UNKNOWN, "the token sees no account")
        )
        return
    shown = "; ".join(f"{a.get('name', '?')} (aid {a.get('aid', '?')})" for a in accounts[:3])
    more = f" and {len(accounts) - 3} more" if len(accounts) > 3 else ""
    checks.append(Check(LYTICS, "lytics.account", "account", OK, shown + more))


async def _streams(probe: Probe, streams: Streams, checks: list[Check]) -> None:
    key, title = "lytics.streams", "streams"
    if streams.problem:
        checks.append(Check(LYTICS, key, title, UNKNOWN, streams.problem))
        return
    for rule_id, written in streams.templated:
        checks.append(
            Check(
                LYTICS,
                key,
                f"stream of rule {rule_id}",
                UNKNOWN,
                f"{written!r} is a template: known only when the rule runs",
            )
        )
    if not streams.literal:
        if not streams.templated:
            checks.append(
                Check(LYTICS, key, title, OK, f"no rule uses {COLLECT}: no stream to check")
            )
        return
    answer = await probe.get("api/datamodel")
    if answer.ok and not answer.is_json:  # a login page or a wrong URL's page
        saw = answer.not_json("LYTICS_API_URL")
        raise Halt(Check(LYTICS, "lytics.auth", "authentication", FAIL, saw))
    data = answer.body.get("data") if isinstance(answer.body, dict) else None
    if not answer.ok or not isinstance(data, list):
        checks.append(
            Check(
                LYTICS,
                key,
                title,
                UNKNOWN,
                f"{answer.shown()}: the data models (stream schemas) cannot be listed, so "
                f"{', '.join(sorted(streams.literal))} cannot be checked",
            )
        )
        return
    names = sorted({str(m.get("name")) for m in data if isinstance(m, dict) and m.get("name")})
    for stream, rules in sorted(streams.literal.items()):
        used = f"used by {', '.join(sorted(set(rules)))}"
        if stream in names:
            checks.append(
                Check(
                    LYTICS, key, f"stream {stream}", OK, f"a data model named {stream!r} ({used})"
                )
            )
        else:
            checks.append(
                Check(
                    LYTICS,
                    key,
                    f"stream {stream}",
                    UNKNOWN,
                    f"no data model named {stream!r} ({used}); GET /api/datamodel lists "
                    f"{', '.join(names) or 'none'}: check the spelling, or whether the "
                    "stream is new",
                )
            )
