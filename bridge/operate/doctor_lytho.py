"""`bridge doctor` for the Lytho DAM API: auth, pages, asset fields, paths, write paths (operate).

Write operations are checked without writing: `OPTIONS <path>` with a real id from a list
answers which methods the path allows (Spring answers OPTIONS this way); a path that does
not say cannot be told apart without writing, and the line says so.
"""

from __future__ import annotations

import string
from typing import Any

from bridge.clients.ids import path_segment
from bridge.clients.lytho_profile import LythoProfile, Operation
from bridge.errors import PermanentError
from bridge.operate.doctor_lytho_pages import PAGE_REQUESTS, DamPages, ident
from bridge.operate.doctor_probe import (
    FAIL,
    OK,
    UNKNOWN,
    Answer,
    Check,
    Halt,
)

# GET of one asset, of the tag and collection lists and of one tag and one collection.
_OBJECT_REQUESTS = 5
FIELDS = (
    "asset_tags",
    "asset_metadata",
    "asset_version",
    "asset_modified",
    "asset_name",
    "asset_file_name",
)


def operations(profile: LythoProfile) -> list[Operation]:
    prefix = "dam.operations."
    return [profile.op(key[len(prefix) :]) for key in profile.entries if key.startswith(prefix)]


def write_paths(profile: LythoProfile) -> list[str]:
    """The distinct path templates of the write operations, in profile order."""
    found: list[str] = []
    for op in operations(profile):
        if op.method != "GET" and op.path not in found:
            found.append(op.path)
    return found


def dam_plan(profile: LythoProfile) -> int:
    """The most requests the DAM checks send."""
    reads = [op for op in operations(profile) if op.method == "GET"]
    return PAGE_REQUESTS + _OBJECT_REQUESTS + len(reads) + len(write_paths(profile))


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class DamDoctor(DamPages):
    """The DAM checks, in the order a user reads them."""

    async def run(self) -> list[Check]:
        try:
            asset = await self.pages()
            if asset is not None:
                self.asset_fields(asset)
                await self.get_one("asset", "asset_id")
                await self.read_operations()
            await self.listed("tags", "tag", "tag_id")
            await self.listed("collections", "collection", "collection_id")
            await self.write_operations()
        except Halt as halt:
            self.checks.append(halt.check)
        except PermanentError as exc:  # an id in a list that is no path segment ('..')
            self.add("dam.paths", "object paths", FAIL, str(exc))
        return self.checks

    # Authentication and pages.

    def asset_fields(self, asset: dict[str, Any]) -> None:
        names = {f"dam.fields.{f}": str(self.profile.value(f"dam.fields.{f}")) for f in FIELDS}
        missing = [name for name in names.values() if name not in asset]
        wrong = [
            names[f"dam.fields.{f}"]
            for f in ("asset_tags", "asset_metadata")
            if names[f"dam.fields.{f}"] in asset
            and not isinstance(asset[names[f"dam.fields.{f}"]], list)
        ]
        fields = ", ".join(sorted(map(str, asset)))
        if missing or wrong:
            problems = [f"no {', '.join(missing)}"] if missing else []
            problems += [f"{', '.join(wrong)} not a list"] if wrong else []
            self.add(
                "dam.fields",
                "asset fields",
                FAIL,
                f"asset {ident(asset)} in a list has {'; '.join(problems)}; its fields: {fields}",
                *names,
                expected=f"{', '.join(names.values())} on every asset in a list",
            )
            return
        self.add(
            "dam.fields",
            "asset fields",
            OK,
            f"asset {ident(asset)} in a list carries {', '.join(names.values())}; its fields: "
            f"{fields}",
            *names,
        )

    # Paths read directly.

    async def get_one(self, name: str, id_name: str) -> None:
        key = f"dam.paths.{name}"
        wanted = self.ids.get(id_name)
        if wanted is None:
            self.add(key, f"path {name}", UNKNOWN, f"no {name} in the list to read", key)
            return
        answer = await self.probe.get(self.profile.dam_path(name, **{id_name: wanted}))
        body = answer.body
        if answer.ok and isinstance(body, dict) and str(body.get("id")) == wanted:
            self.add(key, f"path {name}", OK, f"{answer.shown()}: {name} {wanted}", key)
        else:
            self._refused(key, f"path {name}", answer, f"{name} {wanted} as an object")

    def _refused(self, key: str, title: str, answer: Answer, wanted: str) -> None:
        if answer.status == 404:
            saw = f"{answer.shown()}: no such path"
        elif answer.ok:
            saw = f"{answer.shown()} but not {wanted}: {str(answer.body)[:80]}"
        else:
            saw = f"{answer.shown()}" + (f": {answer.message()}" if answer.message() else "")
        self.add(key, title, FAIL, saw, key, expected=wanted)

    async def listed(self, list_name: str, one_name: str, id_name: str) -> None:
        key = f"dam.paths.{list_name}"
        answer = await self.probe.get(
            self.profile.dam_path(list_name), self._params(self.first_seen)
        )
        page = self._read(answer)
        if isinstance(page, str):
            self._refused(key, f"path {list_name}", answer, f"a page of {list_name}")
        else:
            self.add(key, f"path {list_name}", OK, f"{answer.shown()}: a page of {list_name}", key)
            if page.items:
                self.ids[id_name] = ident(page.items[0])
        await self.get_one(one_name, id_name)

    # Operations.

    def _fill(self, template: str) -> str | None:
        wanted = _placeholders(template)
        if any(name not in self.ids for name in wanted):
            return None
        return template.format(**{n: path_segment(n, self.ids[n]) for n in wanted})

    async def read_operations(self) -> None:
        for op in operations(self.profile):
            if op.method != "GET":
                continue
            key = f"dam.operations.{op.name}"
            title = f"operation {op.name}"
            path = self._fill(op.path)
            if path is None:
                self.add(key, title, UNKNOWN, f"no object to try GET {op.path} with", key)
                continue
            answer = await self.probe.get(path)
            if answer.ok and isinstance(answer.body, dict | list):
                self.add(key, title, OK, f"{answer.shown()}", key)
            else:
                self._refused(key, title, answer, f"GET {op.path} to answer JSON")

    async def write_operations(self) -> None:
        ops = [op for op in operations(self.profile) if op.method != "GET"]
        answers: dict[str, Answer | None] = {}
        for template in write_paths(self.profile):
            path = self._fill(template)
            answers[template] = None if path is None else await self.probe.options(path)
        for op in ops:
            self.write_check(op, answers[op.path])

    def write_check(self, op: Operation, answer: Answer | None) -> None:
        key = f"dam.operations.{op.name}"
        title = f"operation {op.name}"
        wanted = f"{op.method} {op.path}"
        if answer is None:
            names = ", ".join(n for n in _placeholders(op.path) if n not in self.ids)
            self.add(key, title, UNKNOWN, f"{wanted}: no {names} to try the path with", key)
            return
        allow = answer.headers.get("allow")
        if answer.status == 404:
            self.add(
                key,
                title,
                FAIL,
                f"{answer.shown()}: no such path",
                key,
                expected=f"{wanted} to exist (set dam.operations.{op.name})",
            )
        elif (answer.ok or answer.status == 405) and allow:
            methods = {m.strip().upper() for m in allow.split(",") if m.strip()}
            if op.method in methods:
                self.add(key, title, OK, f"{answer.shown()}, Allow: {allow}", key)
            else:
                self.add(
                    key,
                    title,
                    FAIL,
                    f"{answer.shown()}, Allow: {allow}: the path does not allow {op.method}",
                    key,
                    expected=f"{wanted} (set dam.operations.{op.name})",
                )
        else:
            no_allow = " without an Allow header" if answer.ok or answer.status == 405 else ""
            self.add(
                key,
                title,
                UNKNOWN,
                f"{answer.shown()}{no_allow}: cannot tell without writing",
                key,
                expected=wanted,
            )
