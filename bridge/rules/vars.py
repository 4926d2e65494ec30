"""Variables for templates: `vars:` in a rule file and the project's `rules/vars.yaml` (decide).

A variable's value is plain YAML (text, a number, true/false, a list or a map), never a
template. Text may read the environment, but only variables named `BRIDGE_VAR_*`:
`${BRIDGE_VAR_APP_URL}`, or `${BRIDGE_VAR_APP_URL:-https://default}` with a default for
when it is unset or empty; `$${` writes a literal `${`. Any other name is refused, so no
secret (LYTHO_API_KEY, SLACK_BOT_TOKEN, …) can reach a template. Vars are resolved once, at
load; an environment variable that is unset and has no default is a load error.

A file's `vars:` override the project's of the same name for the rules of that file (a
name is replaced whole: maps are not merged). Templates read them as `{{ vars.name }}`;
reading a name that neither defines is reported by `bridge validate` with its place.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import Problem
from bridge.rules.checker import Checker, comment_fix
from bridge.rules.files import PROJECT_VARS, display_name
from bridge.rules.source import Node, parse
from bridge.rules.template_analysis import var_paths
from bridge.schema import type_name
from bridge.settings import RULE_VAR_PREFIX, rule_var_environment
from bridge.templates.environment import Templates

ENV_PREFIX = RULE_VAR_PREFIX
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `$${` is a literal `${`; `${NAME}` or `${NAME:-default}` reads the environment.
_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHOWN = 10  # defined names listed in an "is not defined" message


@dataclass
class ProjectVars:
    """The variables of `rules/vars.yaml` (empty without one) and the problems reading it."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def project_vars(rules_dir: Path, environ: Mapping[str, str] | None = None) -> ProjectVars:
    """Read `vars.yaml` at the top of the rules directory, if there is one."""
    found = ProjectVars()
    other = rules_dir / "vars.yml"
    if other.is_file():
        found.problems.append(
            Problem(
                display_name(other),
                1,
                1,
                f"the project's variables file is named {PROJECT_VARS}; rename this file",
            )
        )
    path = rules_dir / PROJECT_VARS
    if not path.is_file():
        return found
    reader = VarsReader(display_name(path), environ)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.strerror
        found.problems.append(Problem(reader.file, 1, 1, f"cannot read the file: {reason}"))
        return found
    root, source_problems = parse(text)
    found.problems.extend(
        Problem(reader.file, p.line, p.column, p.message) for p in source_problems
    )
    if root is not None:
        if root.is_mapping and list(root.value) == ["vars"] and root.value["vars"].is_mapping:
            reader.problems.append(
                Problem(
                    reader.file,
                    root.line,
                    root.column,
                    f"{PROJECT_VARS} holds the variables themselves (name: value), not "
                    "'vars:'; remove the 'vars:' line and un-indent the rest",
                )
            )
        found.values = reader.read(root, f"{PROJECT_VARS}")
    found.problems.extend(reader.problems)
    return found


class VarsReader:
    """Reads a mapping of variables, resolving `${BRIDGE_VAR_*}`; every problem with its place."""

    def __init__(self, file: str, environ: Mapping[str, str] | None = None) -> None:
        self.file = file
        # Only BRIDGE_VAR_* reach here (bridge.settings reads the environment).
        self.environ = rule_var_environment(environ)
        self.problems: list[Problem] = []

    def error(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.line, node.column, message))

    def read(self, node: Node, where: str) -> dict[str, Any]:
        """Name → value; a name whose value is wrong is still defined (its value None)."""
        if not node.is_mapping:
            self.error(
                node,
                f"{where} must be a mapping of names to values (app_url: https://…), "
                f"not {type_name(node.plain())}",
            )
            return {}
        values: dict[str, Any] = {}
        for name, value in node.value.items():
            if not _NAME.match(name):
                self.error(
                    node.keys[name],
                    f"variable name {name!r} is not valid; expected letters, digits and '_', "
                    "starting with a letter (it is read as vars.<name>)",
                )
                continue
            values[name] = self.value(value, f"vars.{name}")
        return values

    def value(self, node: Node, where: str) -> Any:
        if isinstance(node.value, dict):
            return {k: self.value(v, f"{where}.{k}") for k, v in node.value.items()}
        if isinstance(node.value, list):
            return [self.value(v, f"{where}[{i}]") for i, v in enumerate(node.value)]
        if node.value is None and node.comment:
            self.error(node, f"{where} is empty: {comment_fix(where.rsplit('.', 1)[-1], node)}")
            return None
        if isinstance(node.value, str):
            return self.text(node, where)
        return node.value

    def text(self, node: Node, where: str) -> str | None:
        text: str = node.value
        if "{{" in text or "{%" in text:
            self.error(
                node,
                f"{where} is a template; variables are plain values, rendered as written "
                "(put the template in the rule and read the variable there)",
            )
            return None
        if "$" not in text:
            return text
        out: list[str] = []
        at = 0
        failed = False
        for found in _REFERENCE.finditer(text):
            out.append(text[at : found.start()])
            at = found.end()
            body = found.group("body")
            if body is None:
                out.append("${")
                continue
            value = self.environment(node, where, body)
            failed = failed or value is None
            out.append(value or "")
        rest = text[at:]
        if "${" in rest.replace("$${", ""):
            self.error(node, f"{where} has '${{' without a closing '}}'; write ${{BRIDGE_VAR_…}}")
            return None
        return None if failed else "".join(out) + rest

    def environment(self, node: Node, where: str, body: str) -> str | None:
        """The value of `NAME` or `NAME:-default` from the environment (None on a problem)."""
        name, has_default, default = body.partition(":-")
        name = name.strip()
        if not _ENV_NAME.match(name):
            self.error(
                node,
                f"{where} reads ${{{body}}}, which is not an environment variable name; "
                f"expected ${{{ENV_PREFIX}NAME}} or ${{{ENV_PREFIX}NAME:-default}}",
            )
            return None
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            self.error(
                node,
                f"refused: {where} reads ${{{name}}}; vars may read only environment variables "
                f"named {ENV_PREFIX}* (vars are never secrets)",
            )
            return None
        value = self.environ.get(name, "")
        if value:
            return value
        if has_default:
            return default
        self.error(
            node,
            f"{where} reads ${{{name}}}, which is not set; set {name} in the environment "
            f"or give a default: ${{{name}:-…}}",
        )
        return None


def read_file_vars(checker: Checker, root: Node) -> Node:
    """Take `vars:` off the top of a rule file into the checker; the rest of the file.

    `checker.vars` holds the project's variables on entry and the file's merged over them
    on return; from then on its template checks report reads of undefined variables. In
    a file of one rule (no `rules:`), `vars:` sits at the top beside the rule's `id:`;
    it is the file's all the same.
    """
    if "rules" in root.value and root.value["rules"].is_sequence:
        for item in root.value["rules"].value:
            if item.is_mapping and "vars" in item.value:
                checker.error(
                    item.keys["vars"],
                    "'vars' goes at the top of the file, beside 'rules:', not inside a rule; "
                    "its variables are for every rule of the file",
                )
                item.value.pop("vars")
                item.keys.pop("vars")
    node = root.value.get("vars")
    if node is not None:
        reader = VarsReader(checker.file)
        if node.value is None and not node.comment:
            file_vars: dict[str, Any] = {}  # `vars:` with nothing under it
        else:
            file_vars = reader.read(node, "vars")
        checker.problems.extend(reader.problems)
        checker.vars = {**checker.vars, **file_vars}
        rest = {k: v for k, v in root.value.items() if k != "vars"}
        root = Node(rest, root.line, root.column, {k: v for k, v in root.keys.items() if k in rest})
    checker.templates = VarsTemplates(checker.templates, checker.vars)
    return root


class VarsTemplates(Templates):
    """A rule file's Templates: the same compiled templates, and checks that also report a
    template (or a template file) that reads a variable the file does not define."""

    def __init__(self, base: Templates, known: Mapping[str, Any]) -> None:
        self.__dict__.update(base.__dict__)  # shares environments and caches: nothing recompiled
        self.known_vars = known

    def check_template(self, source: str) -> str | None:
        return super().check_template(source) or self.undefined(source)

    def check_expression(self, expression: str) -> str | None:
        problem = super().check_expression(expression)
        return problem or self.undefined("{{ " + self._strip_braces(expression) + " }}")

    def check_file(self, name: str) -> str | None:
        problem = super().check_file(name)
        if problem or self._loader is None:
            return problem
        source = self._loader.get_source(self._env, name)[0]
        return self.undefined(source, self._file_label(name))

    def undefined(self, source: str, file: str | None = None) -> str | None:
        """What the template reads that is not defined, or None: a variable, or a key inside
        one that is a mapping (`vars.channels.opz`)."""
        told: list[str] = []
        seen: set[tuple[str, ...]] = set()
        for path, line in var_paths(source).items():
            missing = _missing(self.known_vars, path)
            if missing is None or missing[0] in seen:
                continue
            at_path, names = missing
            seen.add(at_path)
            at = f"{file}:{line}: " if file else ""
            shown_path = "vars." + ".".join(at_path)
            parent = "vars" + "".join(f".{n}" for n in at_path[:-1])
            close = difflib.get_close_matches(at_path[-1], names, n=1, cutoff=0.6)
            hint = f"did you mean {parent}.{close[0]}?" if close else ""
            if not hint and len(at_path) > 1:
                shown = ", ".join(names[:_SHOWN]) + (", …" if len(names) > _SHOWN else "")
                hint = f"{parent} has {shown}" if names else f"{parent} is empty"
            elif not hint:
                shown = ", ".join(names[:_SHOWN]) + (", …" if len(names) > _SHOWN else "")
                hint = (
                    f"defined for this file: {shown}"
                    if names
                    else "no variable is defined; add vars: at the top of the rule file "
                    f"or a rules/{PROJECT_VARS}"
                )
            told.append(f"{at}{shown_path} is not defined; {hint}")
        return "; ".join(told) or None


def _missing(
    known: Mapping[str, Any], path: tuple[str, ...]
) -> tuple[tuple[str, ...], list[str]] | None:
    """The first part of `path` that `known` lacks (as a path, with the names there), or
    None when every part is there or the walk reaches a value that is not a mapping (a
    text or a list: what is read of it is not a variable's key)."""
    value: Any = known
    for depth, name in enumerate(path):
        if not isinstance(value, Mapping):
            return None
        if name not in value:
            if depth and name in _MAPPING_METHODS:  # vars.channels.items()
                return None
            return path[: depth + 1], sorted(str(k) for k in value)
        value = value[name]
    return None


_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})
