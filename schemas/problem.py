"""RFC 9457 problem details, the body of every error response (docs/api.md: Validation, Errors)."""

from http import HTTPStatus

from pydantic import BaseModel, ConfigDict

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    """One invalid input field: `field` is the JSON member name, `message` says what is wrong."""

    field: str
    message: str


class Problem(BaseModel):
    """A problem details object: `{type, title, status, detail[, errors][, request_id]}`.

    `detail` is always present because frontends show it; `errors` lists invalid fields on 400.
    Other extension members (RFC 9457 section 3.2) are allowed, e.g. `task` on 412.
    """

    # (This docstring is the schema's description in the OpenAPI document.) Frozen, so that a
    # named problem, a module constant, is shared by every response that answers it;
    # `model_copy(update=...)` makes one with more members (a 412's task, a 500's request id).
    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, status: int, detail: str, **extra) -> "Problem":
        """The problem for HTTP `status`, titled with the status's standard reason phrase."""
        return cls(title=HTTPStatus(status).phrase, status=status, detail=detail, **extra)

    def body(self) -> bytes:
        """The JSON body, leaving out absent optional members."""
        return self.model_dump_json(exclude_none=True).encode()
