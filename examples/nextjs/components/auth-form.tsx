"use client";
// Email and password sign-in and sign-up through Better Auth.
import { useState, type FormEvent } from "react";
import { authClient } from "@/lib/auth-client";

export function AuthForm({ onSignedIn }: { onSignedIn: () => void }) {
  const [mode, setMode] = useState<"sign-in" | "sign-up">("sign-in");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const signingUp = mode === "sign-up";

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email"));
    const password = String(form.get("password"));
    setBusy(true);
    setError(null);
    const { error } = signingUp
      ? await authClient.signUp.email({ name: String(form.get("name")), email, password })
      : await authClient.signIn.email({ email, password });
    setBusy(false);
    if (error) setError(error.message ?? error.statusText ?? "could not sign in");
    else onSignedIn();
  }

  return (
    <form onSubmit={submit} aria-labelledby="auth-heading">
      <h2 id="auth-heading">{signingUp ? "Create an account" : "Sign in"}</h2>
      {signingUp && (
        <label>Name <input type="text" name="name" autoComplete="name" required /></label>
      )}
      <label>Email <input type="email" name="email" autoComplete="email" required /></label>
      <label>
        Password{" "}
        <input type="password" name="password" minLength={8} required
          autoComplete={signingUp ? "new-password" : "current-password"} />
      </label>
      {error && <p role="alert" className="error">{error}</p>}
      <p>
        <button type="submit" disabled={busy}>{signingUp ? "Sign up" : "Sign in"}</button>
        <button type="button" onClick={() => { setMode(signingUp ? "sign-in" : "sign-up"); setError(null); }}>
          {signingUp ? "I have an account" : "Create an account"}
        </button>
      </p>
    </form>
  );
}
