"""Rule matching in process: events/s against 10 … 10,000 rules over 100 event types.

Two layouts per rule count:

- `spread`: the rules are spread evenly over 100 types and the events cycle through the
  types, so each event meets count/100 candidate rules (matching work grows with them);
- `other types`: the event's own type always has 10 rules and the rest belong to the 99
  other types, so the per-event time should stay flat as those grow.

Each is timed for `RuleSet.evaluate` alone, for `evaluate` plus `Evaluation.to_dict()`
for every candidate (what `handle_event` does to write the trace), and with the short
trace proposed in docs/performance.md (the full explanation for matches only).

    python bench/rules.py [--counts 10,100,1000,10000] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
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
    best = 0.0
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            for event in events:
                work(event)
            done += len(events)
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


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
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    print(render(table(run(counts, args.seconds))))


if __name__ == "__main__":
    main()
