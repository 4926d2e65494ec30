"""Syntax errors in rule files told in plain words, and the recovery that reads on past them.

A file indented with tabs is read again with spaces; a `rules:` list with one broken rule
is read again without it, its lines blanked so that the other rules' problems keep their
true places (rules → decide).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class SourceProblem:
    """A problem found while reading YAML, before the file's name is attached."""

    line: int
    column: int
    message: str


_LEADING = re.compile(r"^[ \t]*")


def tab_problems(text: str) -> list[SourceProblem]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        indent = _LEADING.match(line)
        lead = indent.group() if indent else ""
        if "\t" in lead and line.strip() and not line.strip().startswith("#"):
            found.append(
                SourceProblem(
                    number,
                    lead.index("\t") + 1,
                    f"invalid YAML: line {number} is indented with a tab; "
                    "YAML needs spaces: replace the tab with spaces",
                )
            )
    return found


def expand_tabs(text: str, width: int) -> str:
    def expand(line: str) -> str:
        indent = _LEADING.match(line)
        lead = indent.group() if indent else ""
        return lead.expandtabs(width) + line[len(lead) :]

    return "".join(expand(line) for line in text.splitlines(keepends=True))


_ITEM = re.compile(r"^(?P<indent> *)- ")
_TOP_KEY = re.compile(r"^[^\s#-]")


def without_rule_at(text: str, line: int, last_line: int) -> str | None:
    """The text with the `rules:` items holding lines `line`…`last_line` blanked, or None.

    Line numbers are kept (blanked lines stay as empty lines), so the problems found in
    the other rules are reported at their true places.
    """
    lines = text.splitlines(keepends=True)
    start = next(
        (i for i, t in enumerate(lines) if re.match(r"^rules\s*:\s*(#.*)?$", t.rstrip())), None
    )
    if start is None or line - 1 <= start:
        return None
    items: list[int] = []
    indent: str | None = None
    end = len(lines)
    for i in range(start + 1, len(lines)):
        t = lines[i]
        if _TOP_KEY.match(t) and not (indent == "" and t.startswith("- ")):
            end = i
            break
        found = _ITEM.match(t)
        if found is None:
            continue
        if indent is None:
            indent = found.group("indent")
        if found.group("indent") == indent:
            items.append(i)
    last_line = min(last_line, len(lines))
    holding = [i for i in items if i <= line - 1]
    if not holding or last_line - 1 >= end:
        return None
    first = holding[-1]
    last = last_line - 1
    if last in items and last > first:
        last -= 1  # reported at the start of the next rule: the broken one is before it
    later = [i for i in items if i > last]
    stop = later[0] if later else end
    if not any(lines[i].strip() for i in range(first, stop)):
        return None
    blanked = ["\n" if first <= i < stop else t for i, t in enumerate(lines)]
    return "".join(blanked)


def _comment_hint(lines: list[str], first: int, last: int) -> str:
    """When ` #` on one of the lines hid the rest of it (`{channel: #creative}`), say so."""
    for number in range(max(first, 1), min(last, len(lines)) + 1):
        if " #" in lines[number - 1]:
            return (
                f" (' #' on line {number} starts a comment that hides the rest of that line: "
                "quote the value that holds '#')"
            )
    return ""


def describe_yaml_error(exc: yaml.YAMLError, text: str) -> SourceProblem:
    """A syntax error in plain words: what to change, and where."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return SourceProblem(1, 1, f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or exc.context or "invalid YAML"
    context = exc.context or ""
    opened = exc.context_mark.line + 1 if exc.context_mark is not None else line
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    said = f" (YAML says: {problem})"
    plain: str | None = None
    if "nested more than" in problem:
        plain, said = problem, ""
    elif "found character '\t'" in problem:
        plain = f"line {line} has a tab where YAML needs spaces; replace the tab with spaces"
    elif problem.startswith("found character"):
        char = problem.split("'")[1] if "'" in problem else "this character"
        plain = f"a value cannot start with {char!r}; put the value in quotes"
    elif problem == "mapping values are not allowed here":
        before = here[: column - 1]
        if ": " in before or before.rstrip().endswith(":"):
            plain = (
                f"line {line} has ': ' inside an unquoted value; "
                'put the value in quotes (text: "Note: approved")'
            )
        else:
            plain = (
                f"line {line} is indented under a line that already has a value, or the line "
                "above it misses a ':'; line it up with the keys around it"
            )
    elif ("flow sequence" in context or "flow mapping" in context) and (
        problem.endswith("but got ':'") and opened == line
    ):
        plain = (
            f"line {line} has ': ' inside an unquoted value; "
            'put the value in quotes (text: "Note: approved")'
        )
    elif "flow sequence" in context or "flow mapping" in context:
        bracket, closing, what = (
            ("[", "]", "list") if "flow sequence" in context else ("{", "}", "mapping")
        )
        plain = (
            f"the '{bracket}' opened on line {opened} is not closed; "
            f"add '{closing}' where the {what} ends"
        )
        plain += _comment_hint(lines, opened, line)
    elif problem.startswith("expected the node content"):
        plain = f"a value is missing before line {line} column {column}"
        plain += _comment_hint(lines, min(opened, line - 1), line)
    elif "quoted scalar" in context:
        plain = f"the quote opened on line {opened} is never closed; add the closing quote"
    elif context == "while scanning an alias":  # `schedule: * * * * *` unquoted
        start = exc.context_mark.column if exc.context_mark is not None else column - 1
        before, value = here[:start], here[start:].split(" #")[0]
        if "{" in before or "[" in before:  # in a flow mapping or list, up to , } or ]
            value = re.split(r"[,}\]]", value)[0]
        key = re.search(r"([\w.-]+):\s*$", before)
        quoted = f'"{value.strip()}"' if value.strip() else '"* * * * *"'
        quoted = f"{key.group(1)}: {quoted}" if key else quoted
        plain = f"a value starting with '*' is a YAML alias; quote it: {quoted}"
    elif problem.startswith("found undefined alias"):
        name = problem.split("'")[1] if "'" in problem else ""
        plain = (
            f"'*{name}' refers to an anchor '&{name}' that is not defined before it; "
            "define it first, or quote the value if '*' is meant as text"
        )
    elif "could not find expected ':'" in problem:
        plain = f"line {opened} looks like a key without ':'; add ': ' after the key"
    elif problem.startswith("expected <block end>") or problem.startswith("expected <block"):
        if "<scalar>" in problem:
            plain = (
                f"line {line} has text after a quoted value; "
                "quote the whole value, or remove the text after the closing quote"
            )
        else:
            plain = (
                f"line {line} is not indented like the lines before it (the block starting "
                f"on line {opened}); line it up with the items or keys it belongs with"
            )
    if plain is None:
        what = problem
        if exc.problem and exc.context and exc.context_mark is not None:
            what += f" ({exc.context} at line {exc.context_mark.line + 1})"
        return SourceProblem(line, column, f"invalid YAML: {what}")
    return SourceProblem(line, column, f"invalid YAML: {plain}{said}")
