"""Readable text for people: traces, condition trees and tables printed by the CLI.

Every line is safe for a terminal: secrets masked, control characters and lone surrogates
written as escapes (an event id cannot move the cursor or forge a line), nothing nested
deeper than a page could show.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.events import Event
from bridge.redaction import displayable, printable
from bridge.rules.explain import stored_tree_lines
from bridge.rules.waits import wait_text

OK, FAIL = "✓", "✗"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(displayable(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clock(at: Any) -> str:
    try:
        return datetime.fromtimestamp(float(at), UTC).strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        return "??:??:??.???"


def trace_lines(
    event: Event, entries: Sequence[Mapping[str, Any]], secrets: Iterable[str] = ()
) -> list[str]:
    """What happened to an event, oldest first, every line safe to print."""
    secrets = list(secrets)
    shown = displayable(event.to_dict(), secrets)
    lines = [f"event {shown['id']}  {shown['type']}  from {shown['source']}  at {shown['time']}"]
    if shown.get("subject"):
        lines.append(f"  subject: {shown['subject']}")
    lines.append(f"  data: {_short(shown.get('data'), 200)}")
    if not entries:
        lines.append("  (no trace yet: the event is queued, or its trace expired)")
    lines += _entry_lines(displayable(list(entries), secrets))
    return [printable(line) for line in lines]


def _entry_lines(entries: Sequence[Any]) -> list[str]:
    lines: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict):
            lines.append(f"??:??:??.???  {_short(entry)}")
            continue
        try:
            lines += _one_entry(entry)
        except (AttributeError, TypeError, KeyError, ValueError):
            # An entry of a shape this version does not know: show it as it is.
            lines.append(f"{_clock(entry.get('at', 0))}  {_short(entry, 200)}")
    return lines


def _one_entry(entry: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    kind = entry.get("kind")
    when = _clock(entry.get("at", 0))
    run = f" [{entry['run']}]" if entry.get("run") else ""
    if kind == "evaluated":
        rules = entry.get("rules", [])
        matched = entry.get("matched", [])
        note = f"  ({entry['note']})" if entry.get("note") else ""
        lines.append(
            f"{when}  evaluated{run}: {len(matched)} of {len(rules)} candidate rules matched{note}"
        )
        suppressed = entry.get("suppressed") or {}
        digests = entry.get("digests") or {}
        for evaluation in rules:
            mark = OK if evaluation.get("matched") else FAIL
            held = suppressed.get(evaluation.get("rule"))
            note = f"  (not run: {held.get('reason')})" if held else ""
            if evaluation.get("rule") in digests:
                note = f"  (joined digest {digests[evaluation.get('rule')]})"
            lines.append(f"    {mark} rule {evaluation.get('rule')}{note}")
            conditions = evaluation.get("conditions")
            if conditions:
                lines += ["        " + line for line in stored_tree_lines(_tree(conditions))]
    elif kind == "step" and entry.get("uses") == "choose":
        lines += _choice_lines(entry, when, run)
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
        continued = " (continued)" if entry.get("continued") else ""
        lines.append(
            f"{when}  step {entry.get('rule')}/{entry.get('step')} "
            f"{entry.get('uses')}  try {entry.get('attempt')}  "
            f"{entry.get('status')}{continued}{duration}{detail}"
        )
        if isinstance(entry.get("params"), dict):
            lines.append(f"        sent: {_short(entry['params'], 200)}")
    elif kind == "run":
        status = str(entry.get("status"))
        extra = (
            f"  dead letter {entry['dead_letter']}: {entry.get('error')}"
            if entry.get("dead_letter")
            else (f"  ({entry['reason']})" if entry.get("reason") else "")
        )
        if status == "succeeded_with_errors":
            failed = entry.get("failed_steps") or []
            names = ", ".join(map(str, failed)) if isinstance(failed, list) else str(failed)
            status = "succeeded with errors"
            extra = f"  (failed under continue_on_error: {names})" if names else extra
        lines.append(f"{when}  run {entry.get('rule')}{run}  {status}{extra}")
    elif kind == "loop":
        what = f"{when}  loop {entry.get('rule')}/{entry.get('step')}{run} {entry.get('uses')}"
        if entry.get("status") == "started":
            lines.append(f"{what}  over {entry.get('items')} items (for_each)")
        else:
            ended = f"{what}  finished: {entry.get('items')} items"
            if entry.get("skipped"):
                ended += f", {entry['skipped']} skipped (if: false)"
            if entry.get("failed"):
                ended += f", {entry['failed']} failed (continued)"
            lines.append(ended)
    elif kind == "digest":
        members = ", ".join(map(str, entry.get("members") or []))
        lines.append(
            f"{when}  digest of rule {entry.get('rule')} closed with {entry.get('count')} "
            f"events (key {entry.get('key')!r}): {members}"
        )
    elif kind == "wait":
        lines.append(f"{when}  wait {entry.get('rule')}: {wait_text(entry)}")
    elif kind == "unreadable":
        lines.append(f"{when}  {entry.get('error')}")
    else:
        rest = {k: v for k, v in entry.items() if k not in ("at", "kind")}
        lines.append(f"{when}  {kind}  {_short(rest)}")
    return lines


def _choice_lines(entry: dict[str, Any], when: str, run: str) -> list[str]:
    """A choose step: the branch it took (or default, or none), and each branch it tried."""
    result = entry.get("result") or {}
    branch = result.get("branch")
    if branch == "default":
        chose = "no branch holds: default runs"
    elif branch is None:
        chose = "no branch holds and there is no default: nothing runs"
    else:
        chose = f"branch {branch} holds (when: {_short(result.get('when'))}): its steps run"
    lines = [f"{when}  choose {entry.get('rule')}/{entry.get('step')}{run}  {chose}"]
    for tried in (entry.get("params") or {}).get("branches") or []:
        mark = OK if tried.get("holds") else FAIL
        lines.append(f"        {mark} branch {tried.get('branch')}")
        conditions = tried.get("conditions")
        if isinstance(conditions, dict):
            lines += ["            " + line for line in stored_tree_lines(_tree(conditions))]
    return lines


def _tree(node: dict[str, Any]) -> dict[str, Any]:
    """A stored condition tree whose branches cut for depth (by `displayable`) read as a note."""
    copy = dict(node)
    stack = [copy]
    while stack:
        current = stack.pop()
        children = current.get("children")
        if not isinstance(children, list):
            continue
        kept: list[dict[str, Any]] = []
        for child in children:
            if isinstance(child, dict):
                kept.append(dict(child))
                stack.append(kept[-1])
            else:
                kept.append({"op": "expr", "result": current.get("result"), "expected": child})
        current["children"] = kept
    return copy


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table with aligned columns."""
    cells = [[printable(str(c)) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
