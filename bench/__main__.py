"""`python -m bench`: run the chosen sections, print the table, write docs/performance.md.

Progress goes to stderr, the table to stdout. The database of BENCH_DATABASE_URL is only used to
create (and finally drop) the benchmark's own databases.
"""

import sys
import time
import traceback
from datetime import datetime, timezone

from bench import latency, machine, memory, pages, report, roundtrips, scale, throughput, wrk
from bench.config import NEEDS_WRK, Settings
from tests.servers import PostgresDatabase

FAILED = "section failed (traceback on stderr)"


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(settings: Settings) -> list[report.Section]:
    """Every chosen section, in a fresh database (scale makes its own)."""
    runners = {
        "roundtrips": lambda url: roundtrips.measure(url),
        "latency": lambda url: latency.measure(url, settings),
        "throughput": lambda url: throughput.measure(url, settings),
        "pages": lambda url: pages.measure(url, settings),
        "memory": lambda url: memory.measure(url, settings),
        "scale": lambda _url: scale.measure(settings.database_url, settings),
    }
    database = PostgresDatabase(settings.database_url)
    sections = []
    try:
        for name in settings.sections:
            _progress(f"{name} ...")
            started = time.monotonic()
            try:
                sections.append(runners[name](database.url))
            except Exception as error:  # one broken part must not lose the others' figures
                traceback.print_exc()
                sections.append(
                    report.Section(
                        rows=[report.Row(name, FAILED, repr(error)[:200], "runs", False)]
                    )
                )
            _progress(f"{name} done in {time.monotonic() - started:.0f} s")
    finally:
        database.drop()
    return sections


def main() -> int:
    settings = Settings.from_env()
    if NEEDS_WRK & set(settings.sections) and not wrk.available():
        print(wrk.INSTALL_HINT, file=sys.stderr)
        return 2
    started = time.monotonic()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine.facts(settings.database_url)
    sections = run(settings)
    rows = [row for section in sections for row in section.rows]
    print(report.table(rows))
    print(report.summary(rows))
    _progress(f"all done in {time.monotonic() - started:.0f} s")
    if str(settings.output) != "-":
        previous = settings.output.read_text() if settings.output.exists() else None
        settings.output.parent.mkdir(parents=True, exist_ok=True)
        settings.output.write_text(
            report.document(
                when, facts, _parameters(settings, time.monotonic() - started), sections, previous
            )
        )
        _progress(f"wrote {settings.output}")
    return 1 if any(row.case == FAILED for row in rows) else 0  # a missed target is not a failure


def _parameters(settings: Settings, seconds: float) -> str:
    shown = {
        name: value
        for name, value in vars(settings).items()
        if name not in ("database_url", "output")
    }
    listed = ", ".join(
        f"{name}={','.join(value) if isinstance(value, tuple) else value}"
        for name, value in shown.items()
    )
    return f"{listed}; whole run {seconds / 60:.1f} min"


if __name__ == "__main__":
    sys.exit(main())
