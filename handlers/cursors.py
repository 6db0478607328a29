"""Opaque list cursors for keyset pagination.

A cursor is the previous page's last task's sort value and id, bound to the user and to the
list's status, sort and order, and signed (itsdangerous), so a tampered cursor, another user's
cursor or one from a differently sorted list is rejected with ValueError (400).
"""

from datetime import datetime

from itsdangerous import BadData, URLSafeSerializer

from schemas.tasks import ListQuery


class Cursors:
    """Encodes and checks cursors with a secret key (bytes or str)."""

    def __init__(self, secret: str | bytes) -> None:
        self._serializer = URLSafeSerializer(secret, salt="todo-api list cursor")

    @staticmethod
    def _scope(user_id: str, query: ListQuery) -> list:
        return [user_id, query.status, query.sort, query.descending]

    def encode(self, user_id: str, query: ListQuery, value: object, task_id: int) -> str:
        """The cursor of the page that follows the task `task_id` whose sort key is `value`
        (store.Page.last: a title, or a time as a datetime or ISO 8601 text, or None)."""
        if isinstance(value, datetime):  # UTC, as every stored time (tables.UTCTimestamp)
            value = value.isoformat()
        return self._serializer.dumps({"s": self._scope(user_id, query), "v": value, "i": task_id})

    def decode(self, cursor: str, user_id: str, query: ListQuery) -> tuple[object, int]:
        """(sort value, id) of the last task before the page (a time as ISO 8601 text, which
        Store.list_tasks reads); ValueError if not ours or invalid."""
        try:
            data = self._serializer.loads(cursor)
        except BadData:
            raise ValueError("cursor is invalid") from None
        if data.get("s") != self._scope(user_id, query):
            raise ValueError("cursor belongs to another list (user, status, sort or order)")
        return data["v"], data["i"]
