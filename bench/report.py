"""The benchmark's one table, and docs/performance.md around it."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    """One line of the table. `met` is None where there is no target."""

    area: str
    case: str
    measured: str
    target: str = ""
    met: bool | None = None


@dataclass
class Section:
    """What one part of the benchmark found: table rows, and markdown details for the doc."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown paragraphs: how it was measured
    appendix: list[str] = field(default_factory=list)  # markdown: raw material (query plans)


def verdict(met: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: ""}[met]


def table(rows: list[Row]) -> str:
    """The rows as one markdown table (also readable as plain text)."""
    header = ("area", "case", "measured", "target", "met")
    cells = [header] + [
        tuple(
            text.replace("|", "\\|")
            for text in (r.area, r.case, r.measured, r.target, verdict(r.met))
        )
        for r in rows
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]

    def render(line) -> str:
        return "| " + " | ".join(text.ljust(width) for text, width in zip(line, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(header), rule, *(render(line) for line in cells[1:])])


def summary(rows: list[Row]) -> str:
    """One line: how many targets were met and which were missed."""
    judged = [r for r in rows if r.met is not None]
    missed = [f"{r.area}: {r.case}" for r in judged if r.met is False]
    line = f"{len(judged) - len(missed)} of {len(judged)} targets met"
    return line + (f"; missed: {'; '.join(missed)}" if missed else "")


def ms(value: float) -> str:
    """Milliseconds, with precision fitting the size."""
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


ANALYSIS_START = "<!-- analysis:start (kept by `make bench`; edit by hand) -->"
ANALYSIS_END = "<!-- analysis:end -->"
NO_ANALYSIS = "_No analysis has been written for these figures yet._"


REPRODUCE = """## Reproduce

```sh
# wrk comes from Debian's packages: make bench installs it when run as root
make bench                     # about 17 minutes on 2 cores; prints the table, rewrites this file
BENCH_QUICK=1 make bench       # about 3 minutes, small sizes (the figures are then rough)
BENCH_DATABASE_URL=postgresql://user@host:5432/postgres make bench   # another server
BENCH_SECTIONS=roundtrips,latency BENCH_OUTPUT=- make bench          # some parts, print only
```

`make bench` installs `requirements-bench.txt` (the app's requirements and httpx) into
`.venv`. It needs a PostgreSQL where it may create databases (default
`postgresql://postgres@127.0.0.1:5432/postgres`); it creates and drops its own. Every size is a
`BENCH_*` variable (`bench/config.py`): `BENCH_LATENCY_REQUESTS`, `BENCH_LATENCY_REQUESTS_DELAYED`,
`BENCH_DELAY_MS`, `BENCH_WRK_SECONDS`, `BENCH_WRK_WARMUP_SECONDS`, `BENCH_WRK_CONNECTIONS`,
`BENCH_WRK_ROUNDS`, `BENCH_PAGES_USERS`, `BENCH_MEMORY_FIRST_SAMPLE`, `BENCH_MEMORY_SECOND_SAMPLE`,
`BENCH_SCALE_TASKS`, `BENCH_SCALE_USERS`, `BENCH_SCALE_BIG_USER_TASKS`,
`BENCH_SCALE_REQUESTS`. Load only ever goes to 127.0.0.1 and every loop is bounded. The bench
is not part of `make test` or CI; `tests/test_bench.py` runs it at toy sizes without wrk.
"""


def kept_analysis(previous: str | None) -> str:
    """The hand-written analysis block of the previous docs/performance.md, if it has one."""
    if previous and ANALYSIS_START in previous and ANALYSIS_END in previous:
        return previous.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0].strip()
    return NO_ANALYSIS


def document(
    when: str,
    machine: list[tuple[str, str]],
    parameters: str,
    sections: list[Section],
    previous: str | None,
) -> str:
    """docs/performance.md: the table, the machine, the method and raw details of each
    section, and the hand-written analysis of the previous file (kept as it was)."""
    machine_table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine)])
    rows = [row for section in sections for row in section.rows]
    details = [part for section in sections for part in section.details]
    appendix = [part for section in sections for part in section.appendix]
    return "\n".join(
        [
            "# Performance",
            "",
            f"Figures of `make bench` (`python -m bench`, bench/), run {when}. Everything but the "
            "*Analysis* section is written by the benchmark; the analysis is kept from the "
            "previous file when the figures are regenerated.",
            "",
            "## Results",
            "",
            table(rows),
            "",
            summary(rows) + ".",
            "",
            "## Machine",
            "",
            machine_table,
            "",
            f"Parameters: {parameters}.",
            "",
            "## How each part was measured",
            "",
            *(part + "\n" for part in details),
            REPRODUCE,
            "## Analysis",
            "",
            ANALYSIS_START,
            "",
            kept_analysis(previous),
            "",
            ANALYSIS_END,
            "",
            *(["## Query plans", "", *appendix, ""] if appendix else []),
        ]
    )
