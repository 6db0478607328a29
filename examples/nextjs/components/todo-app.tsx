"use client";
// Signed out: the sign-in / sign-up form. Signed in: the task list of that user.
import { useMemo, useRef } from "react";
import { authClient } from "@/lib/auth-client";
import { forgetToken, todoApi } from "@/lib/api";
import { AuthForm } from "./auth-form";
import { Tasks } from "./tasks";

export function TodoApp({ apiUrl }: { apiUrl: string }) {
  const { data: session, isPending } = authClient.useSession();
  const api = useMemo(() => todoApi(apiUrl), [apiUrl]);
  // "Loading" only until the first answer: a later refetch must not unmount a half-filled form.
  const settled = useRef(false);
  if (!isPending) settled.current = true;

  async function signOut() {
    forgetToken();
    await authClient.signOut();
  }

  return (
    <main>
      <div className="row">
        <h1>Todo</h1>
        {session && (
          <p>
            Signed in as <strong>{session.user.name || session.user.email}</strong>{" "}
            <button type="button" onClick={signOut}>Sign out</button>
          </p>
        )}
      </div>
      {isPending && !settled.current ? (
        <p role="status">Loading…</p>
      ) : session ? (
        <Tasks key={session.user.id} api={api} />
      ) : (
        <AuthForm onSignedIn={forgetToken} />
      )}
    </main>
  );
}
