"""Task request and response shapes (docs/api.md: Data, Endpoints, Validation and errors)."""

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

TITLE_MAX = 200
DESCRIPTION_MAX = 1000

# The JSON Schema of each input says exactly what the validators below accept, so the OpenAPI
# document (handlers/openapi.py) and tools that generate requests from it (Schemathesis) agree
# with the server. Patterns are ECMA-262 and Python `re` alike.
#
# Unicode White_Space, which `strip_whitespace` removes (pydantic-core trims with Rust's
# `str::trim`). Python's `\s` also matches U+001C-U+001F, so the class is spelled out.
_SPACE = r"\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#
# A character is a code point, as for the server (Python's str) and for JSON Schema, whose
# patterns are ECMA-262 read with the `u` flag (and Rust's and Python's engines alike). Compiled
# without `u`, JavaScript counts UTF-16 code units instead, in which an emoji is two.
_EDGE = rf"[^{_SPACE}\x00]"  # the first and the last character left after trimming
TITLE_PATTERN = rf"^[{_SPACE}]*{_EDGE}(?:[^\x00]{{0,{TITLE_MAX - 2}}}{_EDGE})?[{_SPACE}]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; docs/api.md: "Strings with NUL characters are rejected".
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def as_utc(value: datetime) -> datetime:
    """Return `value` in UTC; a naive date-time is taken to be UTC already (docs/api.md: Data).

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
    WithJsonSchema(
        {
            "type": "string",
            "pattern": TITLE_PATTERN,
            "description": f"1-{TITLE_MAX} characters once leading and trailing whitespace is "
            "trimmed (the trimmed title is stored); no NUL characters. Characters are Unicode code "
            "points: compile the pattern with the `u` flag (JavaScript's `.length` and `maxlength` "
            "count UTF-16 units, two for an emoji)",
        },
        mode="validation",
    ),
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX),
    AfterValidator(_no_nul),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": DESCRIPTION_MAX,
            "pattern": NO_NUL_PATTERN,
            "description": f"at most {DESCRIPTION_MAX} characters, no NUL characters",
        },
        mode="validation",
    ),
]
DueDate = Annotated[
    datetime,
    BeforeValidator(_due_date),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ],
            "description": "ISO 8601 date (midnight UTC) or date-time (without an offset: UTC)",
        },
        mode="validation",
    ),
]
UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


def _no_default(schema: dict) -> None:
    """JSON Schema hook for a member that may be omitted but not null: its `None` default only
    means "not sent", so the schema shows no default."""
    schema.pop("default", None)


class TaskCreate(BaseModel):
    """Body of POST .../tasks. Strict types: `"true"` is not a bool, `1` is not a string.

    Unknown members, including the read-only `id`, `user_id`, `created_at` and `updated_at`,
    are ignored (docs/api.md: "never applied").
    """

    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"title": "Buy milk", "description": "2 litres", "due_date": "2030-01-31"},
            ]
        },
    )

    title: Title
    description: Description | None = None
    due_date: DueDate | None = None
    completed: bool = False


class TaskUpdate(BaseModel):
    """Body of PUT/PATCH .../tasks/{id}: every field optional, only the members sent change.

    `title` and `completed` may be omitted but not null; `description` and `due_date` may be null
    to clear them.
    """

    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        json_schema_extra={"examples": [{"title": "Buy oat milk", "due_date": None}]},
    )

    # The None defaults only mean "not sent" (never read: changes() takes the members sent), so
    # the types say what a client may send; a null title or completed is 400.
    title: Title = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    description: Description | None = None
    due_date: DueDate | None = None
    completed: bool = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]

    def changes(self) -> dict[str, object]:
        """The members the client sent, as `{column: value}`."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class TaskPublic(BaseModel):
    """A task as clients see it; all times UTC, serialised ISO 8601 with offset."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "title": "Buy milk",
                    "description": "2 litres",
                    "completed": False,
                    "due_date": "2030-01-31T00:00:00Z",
                    "completed_at": None,
                    "created_at": "2026-01-05T09:30:00Z",
                    "updated_at": "2026-01-05T09:30:00Z",
                }
            ]
        },
    )

    id: int
    title: str
    description: str | None
    completed: bool
    due_date: UTCDateTime | None
    completed_at: UTCDateTime | None
    created_at: UTCDateTime
    updated_at: UTCDateTime


class TaskRow(TypedDict):
    """TaskPublic's fields, in its order (tests/test_rendering.py checks they stay the same).

    A store row already holds UTC datetimes (store.UTCTimestamp), so it is written as TaskPublic
    JSON without building a model: through this TypedDict, whose serialiser leaves out the row's
    other members (user_id, version). Validating 20 rows into models before dumping them doubled
    what the JSON of a list costs (~70 us against ~35 us).
    """

    id: int
    title: str
    description: str | None
    completed: bool
    due_date: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


TASK_JSON = TypeAdapter(TaskRow)
TASK_LIST_JSON = TypeAdapter(list[TaskRow])


LIMIT_MAX = 1000
NEWEST_FIRST = ("created", "updated", "completed")  # default to descending


class ListQuery(BaseModel):
    """Query string of GET .../tasks. `order` defaults per sort: created, updated and completed
    newest first, title A-Z, due_date soonest first (docs/api.md: Endpoints). `limit` 1-1000
    (default 1000, so clients that know no pagination see every task of a normal user);
    `cursor` is the opaque position of a next page."""

    # frozen: handlers share one instance for the empty query string
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["all", "pending", "completed"] = Field(
        "all", description="which tasks: all, only pending or only completed ones"
    )
    sort: Literal["created", "updated", "completed", "title", "due_date"] = Field(
        "created",
        description="created: creation time; updated: last change; completed: "
        "completion time; title: A-Z ignoring case; due_date: due date. Tasks without a due "
        "date (or not completed) come last in either order",
    )
    order: Literal["asc", "desc"] | None = Field(
        None,
        description="default: desc for created, updated and completed (newest first), "
        "asc for title and due_date",
    )
    limit: int = Field(
        default=LIMIT_MAX,
        ge=1,
        le=LIMIT_MAX,
        description='page size; when more tasks follow, the Link header has rel="next"',
    )
    cursor: str | None = Field(
        default=None,
        max_length=2048,
        description="opaque position of the next page, from the Link header; bound to the "
        "user and to status, sort and order",
    )

    @property
    def descending(self) -> bool:
        """Whether the sort runs high to low, after applying the per-sort default."""
        if self.order is None:
            return self.sort in NEWEST_FIRST
        return self.order == "desc"
