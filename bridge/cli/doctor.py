"""`bridge doctor`: check the configured Lytho, Lytho Workflow and Lytics APIs, read-only."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from bridge.cli.config import companion_settings, redacted
from bridge.cli.loop import run_async
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.clients.lytho_profile import LythoProfile
    from bridge.settings import Settings

# A usage or configuration problem: nothing was checked (1 means a check failed).
USAGE = 2


def add_doctor_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check every assumption about the configured APIs (read-only)",
        description=(
            "Check what lytbridge assumes about the configured Lytho DAM, Lytho Workflow and "
            "Lytics APIs (auth, pages, shapes, fields, filters, rate-limit headers) with a "
            "bounded number of read requests; one line per assumption. Exit 1 on a ✗."
        ),
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from bridge.clients.lytho_profile import load_profile

    try:
        settings, _ = companion_settings(redis=False)
        profile = load_profile(settings.lytho_profile)
    except ConfigError as exc:
        print(f"bridge doctor: {exc}", file=sys.stderr)
        return USAGE
    return run_async(_doctor(settings, profile, as_json=args.json))


async def _doctor(settings: Settings, profile: LythoProfile, *, as_json: bool) -> int:
    from bridge.operate.doctor import Doctor, doctor_limiter

    limiter, note, close, poller_filter = await doctor_limiter(settings, profile)
    try:
        doctor = Doctor(settings, profile, limiter, limiter_note=note, poller_filter=poller_filter)

        def say(text: str) -> None:
            if not as_json:
                print(redacted(text, settings), flush=True)

        if not doctor.anything:
            for api, missing in doctor.missing.items():
                say(f"\u2013 {api}: not configured ({', '.join(missing)} not set)")
            print(
                "bridge doctor: no API is configured: set LYTHO_API_KEY, LYTHO_CLIENT_ID/"
                "LYTHO_CLIENT_SECRET/LYTHO_TOKEN_URL or LYTICS_API_TOKEN (or run it beside "
                "bridge dev, whose sandboxes it then checks)",
                file=sys.stderr,
            )
            return USAGE
        say(f"bridge doctor: {doctor.plan()}; {note}")
        report = await doctor.run()
    finally:
        await close()
    if as_json:
        print(redacted(json.dumps(report.to_json(), ensure_ascii=False, indent=2), settings))
    else:
        for check in report.checks:
            say(check.line())
        for line in report.summary():
            say(line)
    return 1 if report.failed else 0
