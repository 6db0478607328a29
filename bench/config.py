"""Benchmark parameters, read from `BENCH_*` environment variables.

`BENCH_QUICK=1` shrinks every size (about a minute in all); any single variable still overrides
it. The defaults are the figures docs/performance.md reports.
"""

import os
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("roundtrips", "latency", "throughput", "pages", "memory", "scale")
NEEDS_WRK = {"throughput", "pages", "memory"}

QUICK = {
    "latency_requests": 40,
    "latency_requests_delayed": 10,
    "wrk_seconds": 3,
    "wrk_warmup_seconds": 1,
    "wrk_rounds": 1,
    "pages_users": 100,
    "memory_first_sample": 5_000,
    "memory_second_sample": 10_000,
    "scale_tasks": 20_000,
    "scale_users": 200,
    "scale_big_user_tasks": 5_000,
    "scale_requests": 10,
}


@dataclass(frozen=True)
class Settings:
    """Every knob of `make bench`; `from_env` documents the variable of each."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"  # BENCH_DATABASE_URL
    output: Path = ROOT / "docs" / "performance.md"  # BENCH_OUTPUT ("-": print only)
    sections: tuple[str, ...] = SECTIONS  # BENCH_SECTIONS, comma-separated
    latency_requests: int = 300  # sequential requests per endpoint at 0 ms added RTT
    latency_requests_delayed: int = 50  # ... and at 20 ms added RTT
    delay_ms: float = 20.0  # BENCH_DELAY_MS: the added round-trip time
    list_tasks: int = 20  # tasks in the list that latency and throughput read
    wrk_seconds: int = 10  # measured duration of each wrk run
    wrk_warmup_seconds: int = 3  # unmeasured wrk run before it
    wrk_connections: int = 64
    wrk_rounds: int = 3  # throughput runs of every configuration, interleaved; the best counts
    pages_users: int = 1_000  # users per page size (20, 200, 1,000 tasks) whose tokens rotate
    memory_first_sample: int = 50_000  # requests before the first RSS sample
    memory_second_sample: int = 100_000  # ... and before the second
    scale_tasks: int = 1_000_000  # bulk tasks, spread over scale_users users
    scale_users: int = 10_000
    scale_big_user_tasks: int = 100_000  # tasks of the one big user (interleaved with the rest)
    scale_requests: int = 30  # requests per scale median

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        """Settings from `BENCH_<FIELD>` variables (upper case), after `BENCH_QUICK`'s sizes."""
        values = dict(QUICK) if env.get("BENCH_QUICK", "") not in ("", "0") else {}
        for field in fields(cls):
            raw = env.get(f"BENCH_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            if field.name == "sections":
                values["sections"] = _sections(raw)
            elif field.name == "output":
                values["output"] = Path(raw)
            elif field.name == "database_url":
                values["database_url"] = raw
            else:
                values[field.name] = type(getattr(cls, field.name))(raw)
        return cls(**values)


def _sections(raw: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in raw.split(",") if name.strip())
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"BENCH_SECTIONS: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    return chosen
