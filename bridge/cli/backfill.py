"""`bridge backfill SOURCE`: emit every object of a source once, on purpose (pollers → events).

Each object becomes one `…created` event whose id is its own per object version (the
id of a backfill, distinct from a poll's), so running a backfill twice emits only what
changed in between. Requests wait their turn in the shared rate limiter like actions do;
the poller's snapshot is left alone. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

from bridge.errors import ConfigError, RateLimited
from bridge.ingress.pollers import POLLER_NAMES, configured_pollers

if TYPE_CHECKING:
    from bridge.clients.ratelimit import RateLimiter
    from bridge.operate.context import Context

CREDENTIALS = {
    "lytho": "LYTHO_API_KEY",
    "lytho_workflow": "LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET and LYTHO_TOKEN_URL",
    "lytics": "LYTICS_API_TOKEN",
}


class ProgressBar:
    """`label [#####.....] done/total` on one rewritten line of a terminal, else a line per 10%."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_decile = -1

    def advance(self, done: int, total: int | None) -> None:
        if total:
            filled = min(self.width, self.width * done // total)
            text = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
            decile = 10 * done // total
        else:
            text, decile = f"{self.label}: {done}", -1
        if self.tty:
            self.stream.write("\r" + text)
        elif decile != self._last_decile or not total:
            self.stream.write(text + "\n")
        self._last_decile = decile
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class WaitingBudget:
    """Every request waits for its slot in the shared limiter, as an action's would."""

    def __init__(self, limiter: RateLimiter, api: str) -> None:
        self._limiter = limiter
        self._api = api
        self.requests = 0

    async def slot(self) -> bool:
        while True:
            try:
                await self._limiter.acquire(self._api)
            except RateLimited as exc:
                # The shared limiter says "later" to callers that must not hold a worker;
                # the command has nothing else to do, so it waits.
                await asyncio.sleep(exc.retry_after)
                continue
            self.requests += 1
            return True

    def time_left(self) -> float:
        return float("inf")


async def backfill(context: Context, source: str, progress: ProgressBar) -> int:
    """Emit every object of `source` once; return how many events were new."""
    found = {p.name: p for p in configured_pollers(context)}
    poller = found.get(source)
    if poller is None:
        raise ConfigError(f"bridge backfill {source} needs {CREDENTIALS[source]} to be set")
    try:
        return await poller.backfill(WaitingBudget(context.limiter, source), progress)
    finally:
        progress.close()


def cmd_backfill(args: argparse.Namespace) -> int:
    from bridge.cli.config import companion_settings
    from bridge.operate.context import build_context

    # Beside `bridge dev`: its Redis (the events go to that bridge) and its sandboxes.
    settings, _ = companion_settings()

    async def main() -> int:
        context = await build_context(settings, load_rules=False)
        try:
            return await backfill(context, args.source, ProgressBar(f"backfill {args.source}"))
        finally:
            await context.close()

    new = asyncio.run(main())
    print(f"backfill {args.source}: {new} events emitted", file=sys.stderr)
    return 0


def add_backfill_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `bridge backfill SOURCE` to the `bridge` command's subparsers."""
    parser = subparsers.add_parser(
        "backfill",
        help="emit every object of a source once, as …created events",
        description=(
            "Read every asset (lytho), work request, task, proof, project and campaign "
            "(lytho_workflow), or job and segment (lytics), and emit each once as a "
            "…created event, so rules run for what already exists. Objects unchanged since "
            "an earlier backfill are not emitted again."
        ),
    )
    parser.add_argument("source", choices=POLLER_NAMES, help="the API to read")
    parser.set_defaults(func=cmd_backfill)
