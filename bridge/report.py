"""Readable text for people: traces, condition trees and tables printed by the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.events import Event
from bridge.rules.explain import stored_tree_lines

OK, FAIL = "✓", "✗"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def trace_lines(event: Event, entries: Sequence[dict[str, Any]]) -> list[str]:
    """What happened to an event, oldest first."""
    lines = [f"event {event.id}  {event.type}  from {event.source}  at {event.time}"]
    if event.subject:
        lines.append(f"  subject: {event.subject}")
    lines.append(f"  data: {_short(event.data, 200)}")
    if not entries:
        lines.append("  (no trace yet: the event is queued, or its trace expired)")
    for entry in entries:
        kind = entry.get("kind")
        when = _clock(float(entry.get("at", 0)))
        run = f" [{entry['run']}]" if entry.get("run") else ""
        if kind == "evaluated":
            rules = entry.get("rules", [])
            matched = entry.get("matched", [])
            note = f"  ({entry['note']})" if entry.get("note") else ""
            lines.append(
                f"{when}  evaluated{run}: {len(matched)} of {len(rules)} candidate "
                f"rules matched{note}"
            )
            suppressed = entry.get("suppressed", {})
            for evaluation in rules:
                mark = OK if evaluation.get("matched") else FAIL
                held = suppressed.get(evaluation.get("rule"))
                note = f"  (not run: {held['reason']})" if held else ""
                lines.append(f"    {mark} rule {evaluation.get('rule')}{note}")
                conditions = evaluation.get("conditions")
                if conditions:
                    lines += ["        " + line for line in stored_tree_lines(conditions)]
        elif kind == "step":
            duration = f"  {entry['duration_ms']} ms" if "duration_ms" in entry else ""
            detail = ""
            if entry.get("error"):
                detail = f"  error: {entry['error']}"
            elif "result" in entry:
                detail = f"  → {_short(entry['result'])}"
            if "retry_in" in entry:
                detail += f"  (retry in {entry['retry_in']} s)"
            if "retry_after" in entry:
                detail += f"  (retry after {entry['retry_after']} s)"
            lines.append(
                f"{when}  step {entry.get('rule')}/{entry.get('step')} "
                f"{entry.get('uses')}  try {entry.get('attempt')}  "
                f"{entry.get('status')}{duration}{detail}"
            )
        elif kind == "run":
            extra = (
                f"  dead letter {entry['dead_letter']}: {entry.get('error')}"
                if entry.get("dead_letter")
                else (f"  ({entry['reason']})" if entry.get("reason") else "")
            )
            lines.append(f"{when}  run {entry.get('rule')}{run}  {entry.get('status')}{extra}")
        else:
            rest = {k: v for k, v in entry.items() if k not in ("at", "kind")}
            lines.append(f"{when}  {kind}  {_short(rest)}")
    return lines


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table with aligned columns."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
