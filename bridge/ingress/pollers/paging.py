"""A poller's read through a list's pages, kept in its state between runs (pollers).

A poller reads one page per budget slot, so one pass spans many runs. The `Walk` that
bounds a read (bridge/clients/pages.py: a page repeating the one before, or more than
MAX_PAGES pages, is an EndlessList error) is kept in the poller's state as
`<prefix>read` (entries read this pass) and `<prefix>prev` (the last page's mark). When a
read cannot go on, the pass starts again at its first page on the next run, so a poller
neither loops for ever nor skips a page: it reports the error, once per pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

from bridge.clients.lytho_profile import PageStyle
from bridge.clients.pages import EndlessList, Walk
from bridge.ingress.pollers.snapshot import Commit, Snapshot

T = TypeVar("T")


def resumed(
    state: Mapping[str, str], prefix: str, what: str, api: str, style: PageStyle, size: int
) -> Walk:
    """The walk a pass is at, from the poller's state."""
    read = state.get(f"{prefix}read", "0")
    walk = Walk(what, api, style, size, int(read) if read.isdigit() else 0)
    walk.previous = state.get(f"{prefix}prev", "")
    return walk


def kept(walk: Walk, prefix: str, last: bool) -> dict[str, str]:
    """The state fields of `walk` after a page (cleared when the page ended the pass)."""
    return {
        f"{prefix}read": "0" if last else str(walk.read),
        f"{prefix}prev": "" if last else walk.previous,
    }


async def restarting(
    snapshot: Snapshot, restart: Mapping[str, str], prefix: str, read: Awaitable[T]
) -> T:
    """`read`; on an EndlessList, the state set to `restart` (the pass's first page) first."""
    try:
        return await read
    except EndlessList:
        commit = Commit()
        commit.state.update({**restart, f"{prefix}read": "0", f"{prefix}prev": ""})
        await snapshot.commit(commit)
        raise
