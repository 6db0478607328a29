// The Todo API's typed client, with the token from Better Auth's jwt plugin.
import { createTodoClient, type TodoClient } from "todo-api-client";
import { authClient } from "./auth-client";

let token: Promise<string | null> | null = null;

/** A JWT for the API: the one fetched last (tokens live 15 minutes), or a new one from
 * authClient.token() (GET /api/auth/token) when there is none or the API refused it. */
function getToken({ refresh }: { refresh: boolean }): Promise<string | null> {
  if (refresh || token === null) {
    token = authClient.token().then(({ data }) => data?.token ?? null, () => null);
  }
  return token;
}

/** Forget the token (on sign-out: the next user must not use it). */
export function forgetToken(): void {
  token = null;
}

export function todoApi(baseUrl: string): TodoClient {
  return createTodoClient({ baseUrl, token: getToken });
}
