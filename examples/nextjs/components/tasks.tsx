"use client";
// The signed-in user's tasks, every call through the typed client (todo-api-client).
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import {
  ApiError, nextCursor, ok, withIdempotencyKey,
  type FieldError, type ListQuery, type Task, type TodoClient,
} from "todo-api-client";

const PAGE_SIZE = 10;

type Filters = {
  status: NonNullable<ListQuery["status"]>;
  sort: NonNullable<ListQuery["sort"]>;
  order: NonNullable<ListQuery["order"]> | "";
};
// The list's query choices: the values of ListQuery's status, sort and order, and their labels.
const CHOICES: { key: keyof Filters; label: string; options: [string, string][] }[] = [
  { key: "status", label: "Status", options: [["all", "All"], ["pending", "Pending"], ["completed", "Completed"]] },
  { key: "sort", label: "Sort by", options: [["created", "Created"], ["updated", "Last change"],
    ["completed", "Completion"], ["title", "Title"], ["due_date", "Due date"]] },
  { key: "order", label: "Order", options: [["", "Default"], ["asc", "Ascending"], ["desc", "Descending"]] },
];
type Report = { error?: unknown; notice?: string };
type Props = { api: TodoClient };

/** What to tell the user about a failed call. */
function describe(error: unknown): string {
  if (error instanceof ApiError && error.status === 401) {
    // Even a fresh token was refused: the API and this app disagree on BETTER_AUTH_URL (the
    // tokens' iss, aud and JWKS) or the session ended.
    return `The Todo API refused your sign-in (${error.detail}). Sign out and in again; if that does not help, check that both use the same BETTER_AUTH_URL.`;
  }
  if (error instanceof ApiError) return error.detail;
  if (error instanceof TypeError) return "The Todo API cannot be reached. Check your connection and try again.";
  return String(error);
}

/** The form fields of a task as the API wants them: an empty description or date is null. */
function taskBody(form: HTMLFormElement) {
  const data = new FormData(form);
  const text = (name: string) => String(data.get(name) ?? "");
  return {
    title: text("title"),
    description: text("description").trim() || null,
    due_date: text("due_date") || null, // YYYY-MM-DD from <input type="date">
  };
}

function dueDate(task: Task): string {
  return task.due_date ? task.due_date.slice(0, 10) : "";
}

export function Tasks({ api }: Props) {
  const [filters, setFilters] = useState<Filters>({ status: "all", sort: "created", order: "" });
  const [cursors, setCursors] = useState<(string | null)[]>([null]); // where each page starts
  const [tasks, setTasks] = useState<Task[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const cursor = cursors[cursors.length - 1] ?? null;
  const loads = useRef(0); // numbers the list requests: only the latest one is shown

  const report = useCallback(({ error, notice }: Report) => {
    setError(error === undefined ? null : describe(error));
    if (notice !== undefined) setNotice(notice);
  }, []);

  const load = useCallback(async () => {
    const query: ListQuery = {
      status: filters.status, sort: filters.sort, limit: PAGE_SIZE,
      ...(filters.order && { order: filters.order }), ...(cursor && { cursor }),
    };
    const asked = ++loads.current;
    try {
      const { data, response } = await ok(api.GET("/api/tasks", { params: { query } }));
      if (asked !== loads.current) return; // a later list (other filters, a change) was asked for
      setTasks(data);
      setNext(nextCursor(response));
      setError(null);
    } catch (error) {
      report({ error });
    }
  }, [api, filters, cursor, report]);

  useEffect(() => { void load(); }, [load]);

  function filter(change: Partial<Filters>) {
    setFilters({ ...filters, ...change });
    setCursors([null]);
  }

  async function changed(notice: string) {
    setNotice(notice);
    await load();
  }

  const page = cursors.length;
  return (
    <>
      <NewTask api={api} report={report} onCreated={(task) => {
        setNotice(`Added “${task.title}”.`);
        if (page > 1) setCursors([null]); else void load();
      }} />

      <fieldset className="inline">
        <legend>Show</legend>
        {CHOICES.map(({ key, label, options }) => (
          <label key={key}>{label}{" "}
            <select value={filters[key]} onChange={(e) => filter({ [key]: e.target.value })}>
              {options.map(([value, text]) => <option key={value} value={value}>{text}</option>)}
            </select>
          </label>
        ))}
      </fieldset>

      <p role="status" className="notice">{notice}</p>
      {error && <p role="alert" className="error">{error}</p>}

      {tasks === null ? (
        <p className="muted">Loading tasks…</p>
      ) : tasks.length === 0 ? (
        <p className="muted" id="task-count">{page > 1 ? "No more tasks." : "No tasks yet."}</p>
      ) : (
        <>
          <p className="muted" id="task-count">
            {tasks.length} {tasks.length === 1 ? "task" : "tasks"}{page > 1 || next ? ` on page ${page}` : ""}
          </p>
          <ul className="tasks" aria-labelledby="task-count">
            {tasks.map((task) => (
              <TaskItem key={task.id} task={task} api={api} report={report} onChanged={changed} />
            ))}
          </ul>
        </>
      )}

      {(page > 1 || next) && (
        <nav aria-label="Pages">
          <button type="button" disabled={page === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
            Previous page
          </button>
          <button type="button" disabled={!next} onClick={() => next && setCursors([...cursors, next])}>
            Next page
          </button>
        </nav>
      )}
    </>
  );
}

function FieldErrors({ id, field, errors }: { id: string; field: string; errors: FieldError[] }) {
  const messages = errors.filter((error) => error.field === field).map((error) => error.message);
  return messages.length ? <p id={id} className="error">{messages.join("; ")}</p> : null;
}

/** Title, description and due date inputs, each with the API's field errors after it (as its
 * accessible description, not part of its name). */
function TaskFields({ prefix, task, errors }: { prefix: string; task?: Task; errors: FieldError[] }) {
  const field = (name: string) => {
    const invalid = errors.some((error) => error.field === name);
    return {
      id: `${prefix}-${name}`, name, "aria-invalid": invalid || undefined,
      "aria-describedby": invalid ? `${prefix}-${name}-error` : undefined,
    };
  };
  const error = (name: string) => <FieldErrors id={`${prefix}-${name}-error`} field={name} errors={errors} />;
  return (
    <>
      <label htmlFor={`${prefix}-title`}>Title</label>
      <input type="text" required maxLength={200} defaultValue={task?.title} {...field("title")} />
      {error("title")}
      <label htmlFor={`${prefix}-description`}>Description</label>
      <textarea maxLength={1000} defaultValue={task?.description ?? ""} {...field("description")} />
      {error("description")}
      <label htmlFor={`${prefix}-due_date`}>Due date</label>
      <input type="date" defaultValue={task ? dueDate(task) : ""} {...field("due_date")} />
      {error("due_date")}
    </>
  );
}

function NewTask({ api, report, onCreated }: {
  api: TodoClient; report: (report: Report) => void; onCreated: (task: Task) => void;
}) {
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = event.currentTarget;
    const body = taskBody(form);
    setBusy(true);
    try {
      // One key for the attempt and its retries: a create that timed out is never made twice.
      const { data } = await withIdempotencyKey((key) => ok(api.POST("/api/tasks", {
        params: { header: { "Idempotency-Key": key } }, body,
      })));
      form.reset();
      setErrors([]);
      report({});
      onCreated(data);
    } catch (error) {
      setErrors(error instanceof ApiError ? error.errors : []);
      report({ error });
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} aria-labelledby="new-task-heading">
      <fieldset>
        <legend id="new-task-heading">New task</legend>
        <TaskFields prefix="new" errors={errors} />
        <div><button type="submit" disabled={busy}>Add task</button></div>
      </fieldset>
    </form>
  );
}

function TaskItem({ task, api, report, onChanged }: {
  task: Task; api: TodoClient; report: (report: Report) => void; onChanged: (notice: string) => Promise<void>;
}) {
  // While editing: the task as read when editing began, and its ETag for If-Match.
  const [editing, setEditing] = useState<{ task: Task; etag: string } | null>(null);
  const [conflict, setConflict] = useState<string | null>(null);
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [busy, setBusy] = useState(false);
  const path = { task_id: task.id };

  async function act(action: () => Promise<void>) {
    setBusy(true);
    try {
      await action();
    } catch (error) {
      report({ error });
    } finally {
      setBusy(false);
    }
  }

  const toggle = () => act(async () => {
    const { data } = await withIdempotencyKey((key) => ok(api.PATCH("/api/tasks/{task_id}/complete", {
      params: { path, header: { "Idempotency-Key": key } },
    })));
    await onChanged(`“${data.title}” is ${data.completed ? "done" : "not done"}.`);
  });

  const edit = () => act(async () => {
    const { data, response } = await ok(api.GET("/api/tasks/{task_id}", { params: { path } }));
    setEditing({ task: data, etag: response.headers.get("ETag") ?? "*" });
    setConflict(null);
    setErrors([]);
  });

  const remove = () => act(async () => {
    try {
      await ok(api.DELETE("/api/tasks/{task_id}", { params: { path } }));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error; // gone already
    }
    await onChanged(`Deleted “${task.title}”.`);
  });

  async function save(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (!editing) return;
    const body = taskBody(event.currentTarget);
    await act(async () => {
      try {
        // If-Match: only if nobody changed the task since it was read (else 412).
        await withIdempotencyKey((key) => ok(api.PATCH("/api/tasks/{task_id}", {
          params: { path, header: { "If-Match": editing.etag, "Idempotency-Key": key } }, body,
        })));
      } catch (error) {
        if (error instanceof ApiError && error.status === 412 && error.task) {
          const now = error.task;
          setEditing({ task: editing.task, etag: error.etag ?? "*" });
          setConflict(
            `This task was changed in another tab or window after you started editing, so your ` +
            `changes were not saved. It now reads “${now.title}”` +
            `${now.completed ? " (done)" : ""}. Save again to replace it with your version, or cancel.`,
          );
          return;
        }
        setErrors(error instanceof ApiError ? error.errors : []);
        throw error;
      }
      setEditing(null);
      await onChanged(`Saved “${body.title.trim()}”.`);
    });
  }

  if (editing) {
    return (
      <li>
        <form onSubmit={save} aria-label={`Edit “${task.title}”`}>
          <TaskFields prefix={`edit-${task.id}`} task={editing.task} errors={errors} />
          {conflict && <p role="alert" className="error">{conflict}</p>}
          <button type="submit" disabled={busy}>Save</button>
          <button type="button" onClick={() => setEditing(null)}>Cancel</button>
        </form>
      </li>
    );
  }
  return (
    <li className={task.completed ? "done" : undefined}>
      <div className="row">
        <label>
          <input type="checkbox" checked={task.completed} disabled={busy} onChange={toggle} />{" "}
          <span className="task-title">{task.title}</span>
        </label>
        <span>
          <button type="button" disabled={busy} onClick={edit} aria-label={`Edit “${task.title}”`}>Edit</button>
          <button type="button" disabled={busy} onClick={remove} aria-label={`Delete “${task.title}”`}>Delete</button>
        </span>
      </div>
      {task.description && <p>{task.description}</p>}
      {task.due_date && <p className="muted">Due {dueDate(task)}</p>}
    </li>
  );
}
