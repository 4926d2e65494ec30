"""Rule matching in process: events/s against 10 … 10,000 rules over 100 event types.

Two layouts per rule count:

- `spread`: the rules are spread evenly over 100 types and the events cycle through the
  types, so each event meets count/100 candidate rules (matching work grows with them);
- `other types`: the event's own type always has 10 rules and the rest belong to the 99
  other types, so the per-event time should stay flat as those grow.

Each is timed for `RuleSet.evaluate` alone, for `evaluate` plus `Evaluation.to_dict()`
for every candidate (what `handle_event` does to write the trace), and with the short
trace proposed in docs/performance.md (the full explanation for matches only).

`beside()` then asks, in the same run, whether the rule language of issues 15 and 16
costs anything to rules that do not use it (see its docstring for what it can and cannot
tell).

    python bench/rules.py [--counts 10,100,1000,10000] [--seconds 1.0] [--beside 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.actions import action_schemas
from bridge.events import Event
from bridge.rules import RuleSet, load_rules
from bridge.templates.environment import Templates

TYPES = 100
HOT_TYPE = "lytho.asset.updated"
RULES_PER_FILE = 250


def type_name(index: int) -> str:
    return HOT_TYPE if index == 0 else f"bench.kind{index:03d}.updated"


def rule_yaml(number: int, event_type: str) -> str:
    """One rule; every fourth one per type waits for `approved`, the others for other states."""
    status = "approved" if number % 4 == 0 else f"state-{number % 7}"
    return (
        f"  - id: bench-rule-{number:05d}\n"
        f"    on: {event_type}\n"
        f"    priority: {number % 5}\n"
        "    when:\n"
        f"      - {{path: data.status, eq: {status}}}\n"
        "      - {path: data.tags, contains: hero}\n"
        "    actions:\n"
        "      - uses: slack.post\n"
        '        with: {channel: "#creative", text: "Asset {{ event.id }} approved"}\n'
    )


def write_rules(folder: Path, types: Sequence[str]) -> None:
    """One rule per entry of `types` (its event type), in files of RULES_PER_FILE rules."""
    for start in range(0, len(types), RULES_PER_FILE):
        chunk = types[start : start + RULES_PER_FILE]
        text = "rules:\n" + "".join(
            rule_yaml(start + i, event_type) for i, event_type in enumerate(chunk)
        )
        (folder / f"bench-{start // RULES_PER_FILE:04d}.yaml").write_text(text)


def events_for(types: Sequence[str], count: int = 1000) -> list[Event]:
    out = []
    for i in range(count):
        out.append(
            Event(
                id=f"ev-{i}",
                source="bench",
                type=types[i % len(types)],
                data={
                    "id": i,
                    "status": "approved" if i % 2 == 0 else "in_review",
                    "tags": ["spring", "hero"],
                },
            )
        )
    return out


@dataclass
class Measure:
    layout: str
    rules: int
    candidates: float  # candidate rules per event, on average
    load_seconds: float
    evaluate_eps: float  # events per second, evaluate() alone
    trace_eps: float  # events per second, evaluate() + to_dict() of every evaluation
    matched_per_event: float
    # evaluate() + to_dict() of the matches only, {"rule", "matched"} for the others
    # (a proposal in docs/performance.md, measured here without changing the bridge)
    short_trace_eps: float = 0.0

    @property
    def evaluate_us(self) -> float:
        return 1e6 / self.evaluate_eps

    @property
    def trace_us(self) -> float:
        return 1e6 / self.trace_eps


def rate(
    work: Callable[[Event], object], events: Sequence[Event], seconds: float, rounds: int = 3
) -> float:
    """Events per second that `work` sustains: the best of `rounds` timings of ~seconds/rounds.

    The best round, as timeit does: on a shared 2-core machine the slower rounds measure
    the neighbours, not the code.
    """
    for event in events[:50]:
        work(event)  # warm the per-type plans
    return max(rate_once(work, events, seconds / rounds) for _ in range(rounds))


def measure(layout: str, count: int, seconds: float) -> Measure:
    if layout == "spread":
        rule_types = [type_name(i % TYPES) for i in range(count)]
        event_types = [type_name(i) for i in range(TYPES)]
    else:
        hot = min(10, count)
        rule_types = [HOT_TYPE] * hot + [type_name(1 + i % (TYPES - 1)) for i in range(count - hot)]
        event_types = [HOT_TYPE]
    templates = Templates(None)
    with tempfile.TemporaryDirectory(prefix="lytbridge-bench-rules-") as tmp:
        write_rules(Path(tmp), rule_types)
        began = time.perf_counter()
        ruleset: RuleSet = load_rules(Path(tmp), templates=templates, actions=action_schemas())
        load_seconds = time.perf_counter() - began
    events = events_for(event_types)
    candidates = sum(len(ruleset.candidates(e.type)) for e in events) / len(events)
    matched = sum(len(ruleset.matching(e, templates)) for e in events) / len(events)

    def evaluate(event: Event) -> object:
        return ruleset.evaluate(event, templates)

    def evaluate_and_trace(event: Event) -> object:
        return [e.to_dict() for e in ruleset.evaluate(event, templates)]

    def evaluate_and_short_trace(event: Event) -> object:
        return [
            e.to_dict() if e.matched else {"rule": e.rule.id, "matched": False}
            for e in ruleset.evaluate(event, templates)
        ]

    return Measure(
        layout,
        count,
        candidates,
        load_seconds,
        rate(evaluate, events, seconds),
        rate(evaluate_and_trace, events, seconds),
        matched,
        rate(evaluate_and_short_trace, events, seconds),
    )


# ------------------------------------------------- plain rules beside new-feature rules

# Event types no benchmark event carries: rules on them are never candidates.
UNSENT_TYPE = "bench.unsent.updated"

# The new rule language, one kind per rule in turn (issue 16: `for:`, `for_each`, look-up
# steps, `choose:`, `vars:`, `on: {schedule: …}`; issue 15: `digest:`, `throttle.rollup`,
# slack.post's `thread_key` and `message_key`). Each goes under a plain rule's `on`, `when`
# and the rest, so only these keys tell it from its plain twin.
_SLACK = (
    "      - uses: slack.post\n"
    '        with: {channel: "{{ vars.channel }}", text: "Asset {{ event.id }}"'
)
FEATURE_KINDS: dict[str, tuple[str, str]] = {
    # kind: (keys beside `when:`, the actions)
    "for": ("    for: 48h\n", _SLACK + "}\n"),
    "for_each + look-up": (
        "",
        "      - id: find\n"
        "        uses: lytho.find_assets\n"
        '        with: {tag: "{{ vars.tag }}"}\n'
        "      - id: tag\n"
        '        for_each: "{{ steps.find.assets }}"\n'
        "        as: asset\n"
        "        uses: lytho.tag_asset\n"
        '        with: {asset_id: "{{ asset.id }}", tags: [spring]}\n',
    ),
    "choose": (
        "",
        "      - id: decide\n"
        "        choose:\n"
        "          - when: [{path: data.priority, eq: urgent}]\n"
        "            steps:\n"
        "              - uses: slack.post\n"
        '                with: {channel: "#leads", text: "Urgent {{ event.id }}"}\n'
        "        default:\n"
        "          - uses: http.request\n"
        '            with: {method: POST, url: "{{ vars.hook }}", json: {id: "{{ data.id }}"}}\n',
    ),
    "digest": ('    digest: {key: "{{ data.status }}", window: 10m, max: 50}\n', _SLACK + "}\n"),
    "throttle rollup": (
        '    throttle: {key: "#ops", limit: 1, per: 1h, rollup: true}\n',
        _SLACK + "}\n",
    ),
    "slack keys + look-up": (
        "",
        "      - id: proof\n"
        "        uses: lytho_workflow.get\n"
        '        with: {kind: proof, id: "{{ data.id }}", with_users: true}\n'
        + _SLACK
        + ', thread_key: "asset-{{ data.id }}"}\n'
        + _SLACK
        + ', message_key: "status-{{ data.id }}"}\n',
    ),
    "http/lytics look-ups": (
        "",
        "      - id: get\n"
        "        uses: http.request\n"
        '        with: {method: GET, url: "{{ vars.hook }}/{{ data.id }}"}\n'
        "      - id: who\n"
        "        uses: lytics.lookup\n"
        '        with: {field: email, value: "{{ data.id }}"}\n',
    ),
    "schedule": ("", _SLACK + "}\n"),
}
FEATURE_VARS = 'vars:\n  channel: "#creative"\n  tag: spring\n  hook: https://hooks.example.com/x\n'


def beside_yaml(number: int, event_type: str, features: bool) -> str:
    """An extra rule: the plain rule `number` would be (same `when`, so the same events
    match), with the next kind of FEATURE_KINDS when `features`, else plain. A scheduled
    rule is no candidate for any event, so its plain twin goes on UNSENT_TYPE."""
    kinds = list(FEATURE_KINDS)
    kind = kinds[number % len(kinds)]
    if not features:
        on = UNSENT_TYPE if kind == "schedule" else event_type
        return rule_yaml(number, on)
    status = "approved" if number % 4 == 0 else f"state-{number % 7}"
    keys, actions = FEATURE_KINDS[kind]
    on = (
        '{schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}'
        if kind == "schedule"
        else event_type
    )
    return (
        f"  - id: bench-rule-{number:05d}\n"
        f"    on: {on}\n"
        f"    priority: {number % 5}\n" + keys + "    when:\n"
        f"      - {{path: data.status, eq: {status}}}\n"
        "      - {path: data.tags, contains: hero}\n"
        "    actions:\n" + actions
    )


def write_beside(folder: Path, types: Sequence[str], first: int, features: bool) -> None:
    """Rules numbered from `first`, one per entry of `types`, plain or with new features
    (each file with `vars:` then)."""
    for start in range(0, len(types), RULES_PER_FILE):
        chunk = types[start : start + RULES_PER_FILE]
        text = (FEATURE_VARS if features else "") + "rules:\n"
        text += "".join(beside_yaml(first + start + i, t, features) for i, t in enumerate(chunk))
        (folder / f"beside-{start // RULES_PER_FILE:04d}.yaml").write_text(text)


@dataclass
class Beside:
    variant: str
    rules: int  # loaded in all
    candidates: float  # candidate rules per event
    matched_per_event: float
    evaluate_eps: float  # median of the interleaved repeats
    trace_eps: float  # evaluate() + to_dict() of every evaluation, median
    repeats: int
    evaluate_all: list[float]
    trace_all: list[float]


# Variants, in the order of the table; the ratios compare each with its reference.
ALONE = "plain alone"
PLUS_PLAIN = "plain + as many plain (same types)"
PLUS_FEATURES = "plain + as many new-feature (same types)"
PLUS_FEATURES_ELSEWHERE = "plain + as many new-feature (other types)"
REFERENCE = {PLUS_FEATURES: PLUS_PLAIN, PLUS_FEATURES_ELSEWHERE: ALONE}


def rate_once(work: Callable[[Event], object], events: Sequence[Event], seconds: float) -> float:
    """Events per second of whole passes over `events` for at least `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for event in events:
            work(event)
        done += len(events)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def beside(count: int = 1000, seconds: float = 0.2, repeats: int = 7) -> list[Beside]:
    """Does the new rule language cost rules that do not use it? Same run, four rule sets.

    `count` plain rules (the `spread` layout: 100 types, the events cycle through them) are
    loaded alone, with `count` more plain rules, with `count` rules that use the new
    features, and with `count` new-feature rules on types no event carries. The extra rules
    on the same types are candidates for the same events as the plain ones, with the same
    conditions (the same share of them matches), so:

    - new-feature vs plain extras (same types): what a candidate rule costs because it uses
      `for:`, `for_each`, `choose:`, look-ups, `vars:`, `digest:`, `throttle.rollup`,
      thread/message keys, beside the plain rules' cost (the same candidate count);
    - new-feature rules on other types vs alone: what rules the index never hands an event
      (scheduled rules among them) cost the plain rules' events.

    The four are timed in turn (the order rotated each repeat), evaluate() then +trace,
    `repeats` times each, and the median kept, so the machine's noise falls on all alike.

    What it cannot tell: a cost every rule pays, used or not, since issues 15/16 (a check
    per event or per rule in the engine itself) is in all four alike; that needs the tree
    before them, which this run does not have (docs/performance.md reports one such A/B by
    hand). And it times matching only: what a worker does after a match (a wait, a digest,
    a loop) is the e2e sections' and the feature's own.
    """
    templates = Templates(None)
    event_types = [type_name(i) for i in range(TYPES)]
    plain_types = [type_name(i % TYPES) for i in range(count)]
    other_types = [f"bench.other{i % TYPES:03d}.updated" for i in range(count)]
    extras: dict[str, tuple[Sequence[str], bool] | None] = {
        ALONE: None,
        PLUS_PLAIN: (plain_types, False),
        PLUS_FEATURES: (plain_types, True),
        PLUS_FEATURES_ELSEWHERE: (other_types, True),
    }
    events = events_for(event_types)

    def load(write: Callable[[Path], None]) -> RuleSet:
        with tempfile.TemporaryDirectory(prefix="lytbridge-bench-beside-") as tmp:
            write(Path(tmp))
            return load_rules(Path(tmp), templates=templates, actions=action_schemas())

    # Each set of rules is loaded once; the four rule sets are made of them as the loader
    # makes one (RuleSet of the rules, which indexes them by type).
    plain = load(lambda folder: write_rules(folder, plain_types)).rules
    rulesets: dict[str, RuleSet] = {}
    for variant, extra in extras.items():
        if extra is None:
            rulesets[variant] = RuleSet(plain)
            continue
        types, features = extra
        more = load(lambda folder: write_beside(folder, types, count, features)).rules  # noqa: B023
        rulesets[variant] = RuleSet(plain + more)

    def works(ruleset: RuleSet) -> tuple[Callable[[Event], object], Callable[[Event], object]]:
        def evaluate(event: Event) -> object:
            return ruleset.evaluate(event, templates)

        def evaluate_and_trace(event: Event) -> object:
            return [e.to_dict() for e in ruleset.evaluate(event, templates)]

        return evaluate, evaluate_and_trace

    timed = {v: works(r) for v, r in rulesets.items()}
    for evaluate, trace in timed.values():
        for event in events[:200]:  # warm the per-type plans and the code
            evaluate(event)
            trace(event)
    samples: dict[str, tuple[list[float], list[float]]] = {v: ([], []) for v in timed}
    variants = list(timed)
    for r in range(repeats):
        for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
            evaluate, trace = timed[variant]
            samples[variant][0].append(rate_once(evaluate, events, seconds))
            samples[variant][1].append(rate_once(trace, events, seconds))
    out = []
    for variant, ruleset in rulesets.items():
        evaluated, traced = samples[variant]
        out.append(
            Beside(
                variant,
                len(ruleset),
                sum(len(ruleset.candidates(e.type)) for e in events) / len(events),
                sum(len(ruleset.matching(e, templates)) for e in events) / len(events),
                statistics.median(evaluated),
                statistics.median(traced),
                repeats,
                evaluated,
                traced,
            )
        )
    return out


def beside_ratios(rows: Sequence[Beside]) -> dict[str, tuple[float, float]]:
    """Per compared variant: (evaluate, +trace) events/s over its reference's."""
    by = {b.variant: b for b in rows}
    return {
        v: (by[v].evaluate_eps / by[ref].evaluate_eps, by[v].trace_eps / by[ref].trace_eps)
        for v, ref in REFERENCE.items()
        if v in by and ref in by
    }


def beside_table(rows: Sequence[Beside]) -> list[list[str]]:
    ratios = beside_ratios(rows)
    out = [
        [
            "rules loaded",
            "rules",
            "candidates/event",
            "matched/event",
            "evaluate ev/s",
            "+trace ev/s",
            "vs",
            "evaluate ratio",
            "+trace ratio",
        ]
    ]
    for b in rows:
        ratio = ratios.get(b.variant)
        out.append(
            [
                b.variant,
                f"{b.rules:,}",
                f"{b.candidates:g}",
                f"{b.matched_per_event:g}",
                f"{b.evaluate_eps:,.0f}",
                f"{b.trace_eps:,.0f}",
                REFERENCE.get(b.variant, "-"),
                f"{ratio[0]:.3f}" if ratio else "-",
                f"{ratio[1]:.3f}" if ratio else "-",
            ]
        )
    return out


def run(counts: Sequence[int], seconds: float) -> list[Measure]:
    return [measure(layout, n, seconds) for layout in ("spread", "other types") for n in counts]


def table(measures: Sequence[Measure]) -> list[list[str]]:
    rows = [
        [
            "layout",
            "rules",
            "candidates/event",
            "matched/event",
            "evaluate ev/s",
            "µs/event",
            "+trace ev/s",
            "µs/event",
            "+short trace ev/s",
            "load s",
        ]
    ]
    for m in measures:
        rows.append(
            [
                m.layout,
                f"{m.rules:,}",
                f"{m.candidates:g}",
                f"{m.matched_per_event:g}",
                f"{m.evaluate_eps:,.0f}",
                f"{m.evaluate_us:.1f}",
                f"{m.trace_eps:,.0f}",
                f"{m.trace_us:.1f}",
                f"{m.short_trace_eps:,.0f}",
                f"{m.load_seconds:.2f}",
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    from bench.report import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,100,1000,10000")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--beside", type=int, default=1000, help="plain rules; 0: skip")
    parser.add_argument("--beside-seconds", type=float, default=0.2)
    parser.add_argument("--beside-repeats", type=int, default=9)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    print(render(table(run(counts, args.seconds))))
    if args.beside:
        print()
        print(render(beside_table(beside(args.beside, args.beside_seconds, args.beside_repeats))))


if __name__ == "__main__":
    main()
