"""Defence in depth for values the schemas should already stop: whatever PostgreSQL or psycopg2
refuses is the store's InvalidData, answered 400 problem details, never 500 (handlers/errors.py).
The live paths to these errors are closed by validation (test_validation.py), so the store and
the mapping are checked here in process."""

import asyncio
import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from handlers.errors import EXCEPTION_HANDLERS
from schemas.tasks import ListQuery, TaskCreate
from store import InvalidData, Store
from tests.test_validation import assert_problem


@pytest.fixture(scope="module")
def pg_store(postgres_database):
    store = Store(postgres_database.url)
    store.create_tables()
    yield store
    store.dispose()


@pytest.mark.parametrize("title", ["a\x00b", "a\ud800", "x" * 201],
                         ids=["NUL", "lone surrogate", "longer than the column"])
def test_values_postgresql_refuses_are_invalid_data(pg_store, title):
    user_id = f"user-{uuid.uuid4().hex}"
    pg_store.ensure_user(user_id, None, None)
    unchecked = TaskCreate.model_construct(title=title, description=None, due_date=None,
                                           completed=False)  # as if validation had let it by
    with pytest.raises(InvalidData):
        pg_store.create_task(user_id, unchecked)
    with pytest.raises(InvalidData):
        pg_store.update_task(user_id, 1, {"title": title})
    assert pg_store.list_tasks(user_id, ListQuery()) == []  # nothing stored, pool still usable


def test_invalid_data_is_400_problem_details():
    async def refused(request):
        raise InvalidData("A string literal cannot contain NUL (0x00) characters.")

    app = Starlette(routes=[Route("/refused", refused)], exception_handlers=EXCEPTION_HANDLERS)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/refused")

    response = asyncio.run(get())
    problem = assert_problem(response, 400)
    assert "NUL" not in problem["detail"]  # the driver's wording stays in the log
