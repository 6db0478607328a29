// How a frontend uses the client; type-checked by the tests (`tsc --noEmit`), so it cannot
// drift from the API's contract.
import { ApiError, createTodoClient, nextCursor, ok, withIdempotencyKey } from "../src/index";
import type { ListQuery, Task } from "../src/index";

declare function getToken(options: { refresh: boolean }): Promise<string | null>;

const api = createTodoClient({ baseUrl: "http://localhost:8000", token: getToken });

export async function allPending(): Promise<Task[]> {
  const tasks: Task[] = [];
  let query: ListQuery = { status: "pending", sort: "due_date", order: "asc", limit: 50 };
  for (;;) {
    const { data, response } = await ok(api.GET("/api/tasks", { params: { query } }));
    tasks.push(...data);
    const cursor = nextCursor(response);
    if (!cursor) return tasks;
    query = { ...query, cursor };
  }
}

export async function create(title: string, due: Date | null): Promise<Task> {
  const { data } = await withIdempotencyKey((key) => ok(api.POST("/api/tasks", {
    params: { header: { "Idempotency-Key": key } },
    body: { title, due_date: due ? due.toISOString() : null },
  })));
  return data;
}

export async function rename(id: number, title: string, etag: string): Promise<Task | string> {
  try {
    const { data } = await ok(api.PATCH("/api/tasks/{task_id}", {
      params: { path: { task_id: id }, header: { "If-Match": etag } },
      body: { title },
    }));
    return data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 412 && error.task) {
      return `changed elsewhere: now "${error.task.title}"`;
    }
    if (error instanceof ApiError && error.status === 400) {
      return error.errors.map((field) => `${field.field}: ${field.message}`).join("; ");
    }
    throw error;
  }
}

export async function toggle(id: number): Promise<boolean> {
  const { data } = await ok(api.PATCH("/api/tasks/{task_id}/complete", {
    params: { path: { task_id: id } },
  }));
  return data.completed;
}

export async function remove(id: number): Promise<void> {
  await ok(api.DELETE("/api/tasks/{task_id}", { params: { path: { task_id: id } } }));
}

// The other route family names the user in the path.
export async function ofUser(userId: string): Promise<number> {
  const { data } = await ok(api.GET("/api/{user_id}/tasks", { params: { path: { user_id: userId } } }));
  return data.length;
}
