"""`bridge doctor` for the Lytho Workflow API: token, page shape per kind, filter (operate).

Whether the API honours the modified-since filter is told by one search: an object's own
modification time plus a second must leave that object out. If it comes back, the API
ignores the filter, and the poller reads in full passes instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bridge.clients.pages import Page
from bridge.errors import PermanentError
from bridge.operate.doctor_probe import (
    FAIL,
    OK,
    UNKNOWN,
    Check,
    Halt,
)
from bridge.operate.doctor_workflow_pages import WorkflowPages

KINDS = ("workrequest", "task", "proof", "project", "campaign")
# The token, a search per kind, the filtered search, get/many/users/files of one object
# and the deliverable files of a work request.
WORKFLOW_PLAN = 1 + len(KINDS) + 1 + 5


def just_after(value: Any) -> str | int | float | None:
    """`value` (a modification time) plus one second, written the way the API wrote it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # Epoch milliseconds are 13 digits today; seconds 10.
        return value + (1000 if value > 1e11 else 1)
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    later = when + timedelta(seconds=1)
    spec = "milliseconds" if "." in value else "seconds"
    text = later.isoformat(timespec=spec)
    if value.endswith("Z"):
        text = text.replace("+00:00", "Z")
    return text


class WorkflowDoctor(WorkflowPages):
    """The Workflow checks: token, one search per kind, the filter, the object paths."""

    async def run(self) -> list[Check]:
        try:
            await self.token()
            for kind in KINDS:
                await self.search(kind)
            self.fields()
            picked = self.pick()
            await self.modified_since(picked)
            await self.object_paths(picked)
        except Halt as halt:
            self.checks.append(halt.check)
        except PermanentError as exc:  # an id in a list that is no path segment ('..')
            self.add("workflow.paths", "object paths", FAIL, str(exc))
        return self.checks

    def pick(self) -> tuple[str, dict[str, Any]] | None:
        """The object modified last among the first objects read, with its kind."""
        field = str(self.profile.value("workflow.fields.modified"))
        dated = [(kind, item) for kind, item in self.first.items() if item.get(field)]
        if not dated:
            return next(iter(self.first.items()), None)
        return max(dated, key=lambda pair: str(pair[1][field]))

    async def modified_since(self, picked: tuple[str, dict[str, Any]] | None) -> None:
        param = str(self.profile.value("workflow.search.modified_since"))
        field = str(self.profile.value("workflow.fields.modified"))
        key, title = "workflow.search.modified_since", "modified-since filter"
        entries = (key, "workflow.fields.modified")
        if not param:
            self.add(
                key,
                title,
                OK,
                "none configured (workflow.search.modified_since is empty): the poller reads "
                "in full passes",
            )
            await self.poller_line()
            return
        value = picked[1].get(field) if picked else None
        after = just_after(value)
        if picked is None or after is None:
            saw = (
                "no object to try it with"
                if picked is None
                else f"cannot tell the time format of {field} {value!r}"
            )
            self.add(key, title, UNKNOWN, saw, *entries)
            await self.poller_line()
            return
        kind, item = picked
        ident = str(item.get(self.profile.value("workflow.fields.id")))
        path = self.profile.workflow_path("search", kind=kind)
        answer = await self.probe.get(path, self._params(**{param: after}))
        page = self._read(answer, path) if answer.ok else self.said(answer)
        if isinstance(page, str):
            self.add(
                key,
                title,
                FAIL,
                f"the API refuses {param}={after}: {page}",
                *entries,
                expected=f"{kind} {ident} left out; the poller falls back to full passes",
            )
        elif any(str(i.get(self.profile.value("workflow.fields.id"))) == ident for i in page.items):
            self.add(
                key,
                title,
                FAIL,
                f"{answer.shown()} still holds {kind} {ident} (modified {value}): the API "
                f"ignores {param}: the poller falls back to full passes",
                *entries,
                expected=f'{kind} {ident} left out (or set workflow.search.modified_since: "")',
            )
        else:
            self.add(
                key,
                title,
                OK,
                f"{kind} {ident} (modified {value}) is left out with {param}={after}",
                *entries,
            )
        await self.poller_line()

    async def poller_line(self) -> None:
        """What the Workflow poller of this bridge does about the filter, as its state says."""
        if self.poller_filter is None:
            return
        try:
            verdicts = await self.poller_filter()
        except Exception:  # the poller's state is a courtesy; the checks stand without it
            return
        # `absent` and `unchecked` say nothing the poller learnt: it has not run here.
        if not verdicts or set(verdicts.values()) <= {"absent", "unchecked"}:
            return
        grouped: dict[str, list[str]] = {}
        for kind, verdict in verdicts.items():
            grouped.setdefault(verdict, []).append(kind)
        full = ("ignored", "refused", "absent", "timeless")
        shown = "; ".join(
            f"{', '.join(kinds)}: {verdict}" + (" (full passes)" if verdict in full else "")
            for verdict, kinds in grouped.items()
        )
        proved = {"ignored", "refused"} & set(verdicts.values())
        self.add(
            "workflow.poller",
            "poller",
            UNKNOWN if proved else OK,
            f"what the Workflow poller of this bridge found: {shown}",
        )

    # The paths of one object.

    async def object_paths(self, picked: tuple[str, dict[str, Any]] | None) -> None:
        """get, many, users and files of the picked object; a work request's deliverables."""
        id_field = str(self.profile.value("workflow.fields.id"))
        targets: list[tuple[str, str, str]] = []  # (path name, kind, id)
        if picked is not None:
            kind, ident = picked[0], str(picked[1].get(id_field))
            files = "deliverable_files" if kind == "workrequest" else "files"
            targets = [(name, kind, ident) for name in ("get", "many", "users", files)]
        request = self.first.get("workrequest")
        if request is not None and not any(t[0] == "deliverable_files" for t in targets):
            targets.append(("deliverable_files", "workrequest", str(request.get(id_field))))
        if picked is None:
            for name in ("get", "many", "users", "files"):
                key = f"workflow.paths.{name}"
                self.add(key, f"path {name}", UNKNOWN, "no object to try it with", key)
        for name, kind, ident in targets:
            await self.object_path(name, kind, ident, id_field)

    async def object_path(self, name: str, kind: str, ident: str, id_field: str) -> None:
        key = f"workflow.paths.{name}"
        if name == "many":
            path = self.profile.workflow_path("many", kind=kind)
            answer = await self.probe.get(path, [("ids", ident), *self._params().items()])
            page = self._read(answer, path) if answer.ok else None
            found = isinstance(page, Page) and any(
                str(i.get(id_field)) == ident for i in page.items
            )
        else:
            answer = await self.probe.get(self.profile.workflow_path(name, kind=kind, id=ident))
            body = answer.body
            found = answer.ok and (
                (isinstance(body, dict) and str(body.get(id_field)) == ident)
                if name == "get"
                else isinstance(body, list | dict)
            )
        if found:
            self.add(key, f"path {name}", OK, f"{answer.shown()} ({kind} {ident})", key)
        else:
            saw = f"{answer.shown()}: no such path" if answer.status == 404 else self.said(answer)
            self.add(key, f"path {name}", FAIL, saw, key, expected=f"{kind} {ident}")
