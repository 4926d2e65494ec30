"""`bridge doctor` for the Lytho Workflow API, part one: token, pages per kind, fields (operate)."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.clients.lytho_profile import LIST, LythoProfile
from bridge.clients.pages import Page, read_page
from bridge.errors import ClientError
from bridge.operate.doctor_probe import (
    FAIL,
    OK,
    UNKNOWN,
    WORKFLOW,
    Answer,
    Check,
    Halt,
    Probe,
    unreachable,
)
from bridge.settings import Settings

# What the poller currently does about the filter, per kind (`kind` → verdict), if known.
PollerFilter = Callable[[], Awaitable[dict[str, str] | None]]


class WorkflowPages:
    """The Workflow checks' state, and the checks of the token, pages and fields."""

    def __init__(
        self,
        probe: Probe,
        profile: LythoProfile,
        settings: Settings,
        poller_filter: PollerFilter | None = None,
    ) -> None:
        self.probe = probe
        self.profile = profile
        self.settings = settings
        self.style = profile.workflow_pages
        self.poller_filter = poller_filter
        self.checks: list[Check] = []
        self.first: dict[str, dict[str, Any]] = {}  # kind → its first object
        self.token_answer: Answer | None = None

    def add(self, key: str, title: str, status: str, saw: str, *entries: str, **more: str) -> None:
        self.checks.append(
            Check(WORKFLOW, key, title, status, saw, more.get("expected", ""), entries)
        )

    def said(self, answer: Answer) -> str:
        message = answer.message()
        token = self.probe.headers.get("Authorization", "").removeprefix("Bearer ")
        if token:
            message = message.replace(token, "**********")
        return f"{answer.shown()}" + (f": {message}" if message else "")

    # Authentication.

    async def token(self) -> None:
        how = self.profile.value("workflow.auth.token_auth")
        client_id = self.settings.lytho_client_id or ""
        secret = self.settings.lytho_client_secret
        secret_value = secret.get() if secret is not None else ""
        data = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if how == "basic":
            basic = base64.b64encode(f"{client_id}:{secret_value}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {basic}"
        else:
            data.update(client_id=client_id, client_secret=secret_value)
        answer = await self.probe.token(self.settings.lytho_token_url or "", data, headers)
        if answer.status == 0:
            raise unreachable(WORKFLOW, answer, "LYTHO_TOKEN_URL")
        body = answer.body if isinstance(answer.body, dict) else {}
        token = body.get("access_token")
        sent = "as HTTP Basic" if how == "basic" else "as form fields"
        if not answer.ok or not isinstance(token, str) or not token:
            if answer.ok:
                problem = "answered without an access_token"
            elif 400 <= answer.status < 500:
                problem = "the client id and secret were refused"
            else:  # a server error, or a redirect (to a login page): nothing was refused
                error = " (server error)" if answer.status >= 500 else ""
                problem = f"answered {answer.status}{error}, so the credentials were not checked"
            saw = f"{self.said(answer)}: {problem} (sent {sent})"
            if answer.ok and not answer.is_json:
                saw = answer.not_json("LYTHO_TOKEN_URL", "the tenant's token URL")
            if secret_value:
                saw = saw.replace(secret_value, "**********")
            raise Halt(
                Check(
                    WORKFLOW,
                    "workflow.auth",
                    "token exchange",
                    FAIL,
                    saw,
                    "an access_token; check LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET and "
                    "LYTHO_TOKEN_URL, or workflow.auth.token_auth (basic or body)",
                    ("workflow.auth.token_auth",),
                )
            )
        self.probe.headers["Authorization"] = f"Bearer {token}"
        self.token_answer = answer

    # Pages.

    def _params(self, **more: Any) -> dict[str, Any]:
        style = self.style
        return {style.page_param: style.first_page, style.size_param: style.size, **more}

    def _read(self, answer: Answer, what: str) -> Page | str:
        try:
            return read_page(answer.body, self.style, what)
        except ClientError as exc:
            return str(exc)

    async def search(self, kind: str) -> None:
        path = self.profile.workflow_path("search", kind=kind)
        answer = await self.probe.get(path, self._params())
        first = not any(c.key == "workflow.auth" for c in self.checks)
        if answer.status in (401, 403):
            raise Halt(
                Check(
                    WORKFLOW,
                    "workflow.auth",
                    "authentication",
                    FAIL,
                    f"{self.said(answer)}: the bearer token from LYTHO_TOKEN_URL was not accepted",
                    "a 2xx answer; check that LYTHO_TOKEN_URL belongs to this API's tenant",
                )
            )
        if answer.ok and not answer.is_json:  # a login page or a wrong URL's page
            saw = answer.not_json("LYTHO_WORKFLOW_API_URL")
            raise Halt(Check(WORKFLOW, "workflow.auth", "authentication", FAIL, saw))
        if first and answer.status and self.token_answer is not None:
            # Only a page of objects, as JSON, shows the token was checked.
            held = answer.ok and isinstance(self._read(answer, path), Page)
            self.add(
                "workflow.auth",
                "authentication",
                OK if held else UNKNOWN,
                f"a token from LYTHO_TOKEN_URL ({self.token_answer.shown()}), accepted by "
                f"{answer.shown()}"
                if held
                else f"{answer.shown()} is not a page of {kind}s: cannot tell if the token "
                "was checked",
                "workflow.auth.token_auth",
            )
        if answer.status == 0:
            raise unreachable(WORKFLOW, answer, "LYTHO_WORKFLOW_API_URL")
        entries = (
            f"workflow.kinds.{kind}",
            "workflow.paths.search",
            "workflow.pages.page_param",
            "workflow.pages.size_param",
            "workflow.pages.sizes",
            "workflow.pages.items",
        )
        title = f"{kind} pages"
        if not answer.ok:
            saw = f"{answer.shown()}: no such path" if answer.status == 404 else self.said(answer)
            self.add(kind, title, FAIL, saw, *entries, expected="a page of objects")
            return
        page = self._read(answer, path)
        if isinstance(page, str):
            self.add(kind, title, FAIL, page, *entries, expected="a page of objects")
            return
        if page.items:
            self.first[kind] = page.items[0]
        self.page_line(kind, page, answer, entries)

    def page_line(self, kind: str, page: Page, answer: Answer, entries: tuple[str, ...]) -> None:
        style = self.style
        title = f"{kind} pages"
        where = "a bare list" if page.shape == LIST else f"items under {page.shape!r}"
        body = answer.body if isinstance(answer.body, dict) else {}
        totals = [
            ("workflow.pages.total", style.total, int),
            ("workflow.pages.total_pages", style.total_pages, int),
            ("workflow.pages.last", style.last, bool),
        ]
        checked = [(entry, key) for entry, key, kind_ in totals if key]
        found = [
            f"{key} {json.dumps(body[key])}"
            for _, key, type_ in totals
            if key and isinstance(body.get(key), type_)
        ]
        missing = [key for _, key, type_ in totals if key and not isinstance(body.get(key), type_)]
        entries += tuple(entry for entry, _ in checked)
        compared = [str(f) for f in self.profile.value(f"workflow.compared.{kind}")]
        first = page.items[0] if page.items else None
        absent = [f for f in compared if first is not None and f not in first]
        note = f"; {len(page.items)} on the first page"
        if absent:
            note += f"; not in the first {kind}: {', '.join(absent)}"
        elif first is not None:
            entries += (f"workflow.compared.{kind}",)
        problems = []
        if page.shape != style.items:
            problems.append(f"{where}, not under {style.items!r}")
        if missing:
            problems.append(f"no {', '.join(missing)}")
        if problems:
            self.add(
                kind,
                title,
                FAIL,
                f"{answer.shown()}: {'; '.join(problems)}{note}",
                *entries,
                expected=f"items under {style.items!r} (workflow.pages.items) and the totals "
                "named by workflow.pages.total, total_pages, last",
            )
        else:
            shown = ", ".join([where, *found])
            self.add(kind, title, OK, f"{answer.shown()}: {shown}{note}", *entries)

    def fields(self) -> None:
        """An id on every kind's objects; which kinds carry a modification time and status.

        A kind whose objects carry no modification time is read in full passes (Lytho's
        reference shows none on a work request), so only a missing id is a failure.
        """
        key = "workflow.fields"
        names = {
            k: str(self.profile.value(f"workflow.fields.{k}")) for k in ("id", "modified", "status")
        }
        if not self.first:
            self.add(key, "object fields", UNKNOWN, "no objects of any kind to read")
            return
        having = {
            k: [kind for kind, item in self.first.items() if name in item]
            for k, name in names.items()
        }
        lacking_id = [kind for kind in self.first if kind not in having["id"]]
        parts = []
        for k in ("id", "modified", "status"):
            kinds = having[k]
            others = [kind for kind in self.first if kind not in kinds]
            if kinds and others:
                parts.append(f"{names[k]} on {', '.join(kinds)}, not on {', '.join(others)}")
            elif kinds:
                parts.append(f"{names[k]} on every kind")
            else:
                parts.append(f"no {names[k]} on any kind")
        timeless = [kind for kind in self.first if kind not in having["modified"]]
        saw = "; ".join(parts)
        if timeless:
            saw += f" (the poller reads {', '.join(timeless)} in full passes)"
        entries = tuple(f"workflow.fields.{k}" for k in names if having[k])
        if lacking_id:
            self.add(
                key,
                "object fields",
                FAIL,
                saw,
                *entries,
                "workflow.fields.id",
                expected=f"{names['id']} on every object (workflow.fields.id)",
            )
        else:
            self.add(key, "object fields", OK, saw, *entries)

    # The modified-since filter.
