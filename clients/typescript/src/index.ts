/**
 * Typed client of the Todo API: openapi-fetch over the types that openapi-typescript generates
 * from the API's `/openapi.json` (src/schema.d.ts, never edited by hand), plus what every
 * frontend needs on top: the bearer token (fetched again once when the API says it expired),
 * problem details (RFC 9457) as a typed `ApiError`, the next page's cursor from the `Link`
 * header (RFC 8288), and retries that are safe because they reuse one `Idempotency-Key`.
 *
 *   const api = createTodoClient({ baseUrl: "http://localhost:8000", token: getToken });
 *   const { data: tasks, response } = await ok(api.GET("/api/tasks", { params: { query: { sort: "title" } } }));
 */
import createClient, { type Client } from "openapi-fetch";
import type { components, operations, paths } from "./schema";

export type { components, operations, paths };
export type Task = components["schemas"]["TaskPublic"];
export type TaskCreate = components["schemas"]["TaskCreate"];
export type TaskUpdate = components["schemas"]["TaskUpdate"];
export type FieldError = components["schemas"]["FieldError"];
export type Problem = components["schemas"]["Problem"];
export type ListQuery = NonNullable<operations["listTasks"]["parameters"]["query"]>;
export type TodoClient = Client<paths>;

/**
 * Where the bearer token comes from, e.g. Better Auth's `authClient.token()`. `refresh` is true
 * when the API refused the last token (401: expired or revoked): return a new one, not a cached
 * one. Return null when nobody is signed in (the API then answers 401).
 */
export type TokenSource = (options: { refresh: boolean }) => Promise<string | null> | string | null;

export interface TodoClientOptions {
  /** The API's origin, e.g. "http://localhost:8000" (no trailing slash). */
  baseUrl: string;
  token: TokenSource;
  /** Defaults to the global fetch. */
  fetch?: (request: Request) => Promise<Response>;
}

/** The API's client: every call carries `Authorization: Bearer <token>`; a 401 is retried once
 * with a refreshed token, so a token that expires mid-session goes unnoticed. */
export function createTodoClient(options: TodoClientOptions): TodoClient {
  const send = options.fetch ?? ((request: Request) => globalThis.fetch(request));
  const authorized = async (request: Request, refresh: boolean): Promise<Response> => {
    const token = await options.token({ refresh });
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return send(request);
  };
  return createClient<paths>({
    baseUrl: options.baseUrl,
    fetch: async (request) => {
      const spare = request.clone(); // a body can be sent once: keep one for the retry
      const response = await authorized(request, false);
      return response.status === 401 ? authorized(spare, true) : response;
    },
  });
}

/** A non-2xx answer of the API: its problem details, typed. */
export class ApiError extends Error {
  /** The HTTP status, e.g. 400, 404, 412. */
  readonly status: number;
  /** Human-readable, always present: show it to the user. */
  readonly detail: string;
  /** On 400: each invalid member and what is wrong with it. */
  readonly errors: FieldError[];
  /** On 412 (If-Match did not match): the task as it is now. */
  readonly task: Task | null;
  /** On 412: the current task's ETag, to send in If-Match when overwriting it after all. */
  readonly etag: string | null;
  /** The id of the request in the server's log. */
  readonly requestId: string | null;
  /** On 409 and 503: seconds to wait before trying again. */
  readonly retryAfter: number | null;
  readonly problem: Problem;

  constructor(response: Response, body: unknown) {
    const problem = asProblem(response, body);
    super(problem.detail);
    this.name = "ApiError";
    this.problem = problem;
    this.status = response.status;
    this.detail = problem.detail;
    this.errors = problem.errors ?? [];
    this.task = response.status === 412 ? ((problem as { task?: Task }).task ?? null) : null;
    this.etag = response.headers.get("ETag");
    this.requestId = problem.request_id ?? response.headers.get("X-Request-ID");
    const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    this.retryAfter = Number.isNaN(retry) ? null : retry;
  }
}

function asProblem(response: Response, body: unknown): Problem {
  if (body && typeof body === "object" && typeof (body as Problem).detail === "string") {
    return body as Problem;
  }
  // Not problem details: a proxy's HTML page, say. Keep what the status says.
  const title = response.statusText || `HTTP ${response.status}`;
  return { type: "about:blank", title, status: response.status, detail: title, errors: null, request_id: null };
}

type Result = { data?: unknown; error?: unknown; response: Response };
/** The data type of a call's success branch (openapi-fetch's FetchResponse). */
type Data<R> = Extract<R, { data: unknown }>["data"];

/** The data of a successful call; a problem answer becomes an `ApiError` (thrown). */
export async function ok<R extends Result>(call: Promise<R>): Promise<{ data: Data<R>; response: Response }> {
  const result = await call;
  if (result.error !== undefined || !result.response.ok) {
    throw new ApiError(result.response, result.error);
  }
  return { data: result.data as Data<R>, response: result.response };
}

/** The `cursor` of the next page from a list answer's `Link: <...>; rel="next"`, or null on the
 * last page. */
export function nextCursor(response: Response): string | null {
  const next = response.headers.get("Link")?.match(/<([^>]+)>\s*;\s*rel="?next"?/);
  const target = next?.[1];
  return target ? new URL(target, response.url || "http://localhost").searchParams.get("cursor") : null;
}

/** Whether a failure may be retried with the same Idempotency-Key: the network failed, the
 * server was briefly unavailable, or the first attempt is still running (409). */
export function isTransient(error: unknown): boolean {
  if (error instanceof ApiError) return [409, 502, 503, 504].includes(error.status);
  return error instanceof TypeError; // fetch's network error
}

/**
 * Runs `attempt(key)` with one fresh Idempotency-Key, retrying transient failures with the same
 * key, so the server does the work at most once (a replay answers as the first attempt did).
 * Waits `Retry-After` seconds when given, else 0.5 s, 1 s, 2 s, ...
 */
export async function withIdempotencyKey<T>(
  attempt: (idempotencyKey: string) => Promise<T>,
  { attempts = 4, sleep = (ms: number) => new Promise((done) => setTimeout(done, ms)) } = {},
): Promise<T> {
  const key = crypto.randomUUID();
  for (let tries = 1; ; tries++) {
    try {
      return await attempt(key);
    } catch (error) {
      if (tries >= attempts || !isTransient(error)) throw error;
      const seconds = error instanceof ApiError && error.retryAfter !== null
        ? error.retryAfter : 0.5 * 2 ** (tries - 1);
      await sleep(seconds * 1000);
    }
  }
}
