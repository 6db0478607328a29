"""Bodies of the probes `GET /health` and `GET /ready` (docs/api.md: Operations)."""

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    """`GET /health`: the process serves requests."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """`GET /ready`: the database answers."""

    status: Literal["ready"] = "ready"
