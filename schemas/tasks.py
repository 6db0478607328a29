"""Task request and response shapes (SPEC.md: Data, Endpoints, Validation and errors)."""

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

TITLE_MAX = 200
DESCRIPTION_MAX = 1000


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; SPEC.md: "Strings with NUL characters are rejected".
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def as_utc(value: datetime) -> datetime:
    """Return `value` in UTC; a naive date-time is taken to be UTC already (SPEC.md: Data).

    Raises ValueError when the conversion leaves the representable range (year 1 to 9999).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("date is out of range") from None


def _due_date(value: object) -> object:
    """ISO 8601 date (midnight UTC) or date-time (naive means UTC), converted to UTC."""
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        if not isinstance(value, str):  # no Unix timestamps: 1700000000 is not a due date
            raise ValueError
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "must be an ISO 8601 date or date-time, e.g. 2026-12-31 or 2026-12-31T17:00:00Z"
        ) from None
    return as_utc(parsed)


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    AfterValidator(_no_nul),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX), AfterValidator(_no_nul)]
DueDate = Annotated[datetime, BeforeValidator(_due_date)]
UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


class TaskCreate(BaseModel):
    """Body of POST .../tasks. Strict types: `"true"` is not a bool, `1` is not a string.

    Unknown members, including the read-only `id`, `user_id`, `created_at` and `updated_at`,
    are ignored (SPEC.md: "never applied").
    """

    model_config = ConfigDict(strict=True, extra="ignore")

    title: Title
    description: Description | None = None
    due_date: DueDate | None = None
    completed: bool = False


class TaskUpdate(BaseModel):
    """Body of PUT/PATCH .../tasks/{id}: every field optional, only the members sent change.

    `title` and `completed` may be omitted but not null; `description` and `due_date` may be null
    to clear them.
    """

    model_config = ConfigDict(strict=True, extra="ignore")

    title: Title = Field(default=None)
    description: Description | None = None
    due_date: DueDate | None = None
    completed: bool = Field(default=None)

    def changes(self) -> dict[str, object]:
        """The members the client sent, as `{column: value}`."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class TaskPublic(BaseModel):
    """A task as clients see it; all times UTC, serialised ISO 8601 with offset."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str | None
    completed: bool
    due_date: UTCDateTime | None
    completed_at: UTCDateTime | None
    created_at: UTCDateTime
    updated_at: UTCDateTime


LIMIT_MAX = 1000
NEWEST_FIRST = ("created", "updated", "completed")  # default to descending


def task_etag(task: dict) -> str:
    """Strong ETag of a stored task: its id and version, which grows on every change
    (RFC 9110 section 8.8.3)."""
    return f'"{task["id"]}-{task["version"]}"'


class ListQuery(BaseModel):
    """Query string of GET .../tasks. `order` defaults per sort: created, updated and completed
    newest first, title A-Z, due_date soonest first (SPEC.md: Endpoints). `limit` 1-1000
    (default 1000, so clients that know no pagination see every task of a normal user);
    `cursor` is the opaque position of a next page."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["all", "pending", "completed"] = "all"
    sort: Literal["created", "updated", "completed", "title", "due_date"] = "created"
    order: Literal["asc", "desc"] | None = None
    limit: int = Field(default=LIMIT_MAX, ge=1, le=LIMIT_MAX)
    cursor: str | None = Field(default=None, max_length=2048)

    @property
    def descending(self) -> bool:
        """Whether the sort runs high to low, after applying the per-sort default."""
        if self.order is None:
            return self.sort in NEWEST_FIRST
        return self.order == "desc"
