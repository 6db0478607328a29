"""Tasks are private: another user's task is indistinguishable from a missing one (404), and a
foreign path user is 403 (SPEC.md: Endpoints)."""

from tests.conftest import Api, new_user
from tests.test_validation import assert_problem


def test_other_users_task_is_404_on_every_endpoint(api, other):
    task = api.new_task(title="private", description="secret")
    missing = 2147483000
    for task_id in (task["id"], missing):
        assert_problem(other.get(task_id), 404)
        assert_problem(other.update(task_id, {"title": "stolen"}), 404)
        assert_problem(other.update(task_id, {"completed": True}, method="PATCH"), 404)
        assert_problem(other.toggle(task_id), 404)
        assert_problem(other.delete(task_id), 404)
    assert other.get(task["id"]).json() == other.get(missing).json()
    assert other.list().json() == []
    assert api.get(task["id"]).json() == task  # unchanged


def test_lists_are_scoped_to_the_caller(api, other):
    mine = api.new_task(title="mine")
    theirs = other.new_task(title="theirs")
    assert [t["id"] for t in api.list().json()] == [mine["id"]]
    assert [t["id"] for t in other.list().json()] == [theirs["id"]]


def test_foreign_path_user_is_403(client, api):
    task = api.new_task()
    intruder = new_user()
    foreign = Api(client, intruder, "A")
    foreign.prefix = f"/api/{api.user.id}"  # intruder's token, victim's path
    assert_problem(foreign.list(), 403)
    assert_problem(foreign.create({"title": "planted"}), 403)
    assert_problem(foreign.create(content=b"not even json"), 403)
    assert_problem(foreign.get(task["id"]), 403)
    assert_problem(foreign.update(task["id"], {"title": "x"}), 403)
    assert_problem(foreign.update(task["id"], {"title": "x"}, method="PATCH"), 403)
    assert_problem(foreign.toggle(task["id"]), 403)
    assert_problem(foreign.delete(task["id"]), 403)
    assert_problem(foreign.get("abc"), 403)
    assert api.list().json() == [task]


def test_both_families_see_the_same_tasks(client):
    user = new_user()
    family_a, family_b = Api(client, user, "A"), Api(client, user, "B")
    task = family_a.new_task()
    assert family_b.get(task["id"]).json() == task
    toggled = family_b.toggle(task["id"]).json()
    assert family_a.get(task["id"]).json() == toggled
    assert family_b.delete(task["id"]).status_code == 204
    assert family_a.list().json() == []
