// Better Auth on the server: email and password accounts, and the jwt plugin whose tokens the
// Todo API verifies against this app's /api/auth/jwks (EdDSA keys; iss and aud = baseURL).
import Database from "better-sqlite3";
import { betterAuth, type BetterAuthOptions } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { jwt } from "better-auth/plugins";
import { Pool } from "pg";

const env = process.env;
const databaseUrl = env.AUTH_DATABASE_URL ?? "sqlite:auth.db";

// Better Auth keeps its own tables (user, session, account, verification, jwks): in a SQLite
// file by default, or in PostgreSQL (the API's database is fine: no table names collide).
function database(): BetterAuthOptions["database"] {
  if (/^postgres(ql)?:\/\//.test(databaseUrl)) return new Pool({ connectionString: databaseUrl });
  const file = databaseUrl.replace(/^sqlite:(\/\/)?/, "");
  const sqlite = new Database(file);
  sqlite.pragma("journal_mode = WAL");
  return sqlite;
}

function options() {
  return {
    baseURL: env.BETTER_AUTH_URL ?? "http://localhost:3000",
    secret: env.BETTER_AUTH_SECRET,
    database: database(),
    emailAndPassword: { enabled: true, autoSignIn: true },
    // For tests: JWT_EXPIRATION_TIME ("1s"; Better Auth's default is 15 minutes), and
    // AUTH_RATE_LIMIT=off (many sign-ups from one address within seconds).
    plugins: [jwt({ jwt: { expirationTime: env.JWT_EXPIRATION_TIME ?? "15m" } })],
    rateLimit: { enabled: env.AUTH_RATE_LIMIT !== "off" },
    telemetry: { enabled: false },
  } satisfies BetterAuthOptions;
}

let instance: ReturnType<typeof betterAuth<ReturnType<typeof options>>> | null = null;

/** Better Auth, made on first use: `next build` imports this module but must not open the
 * database or need the secret. */
export function auth() {
  instance ??= betterAuth(options());
  return instance;
}

/** Creates or upgrades Better Auth's tables; idempotent (run once at server start). */
export async function migrate(): Promise<void> {
  const { runMigrations } = await getMigrations(auth().options);
  await runMigrations();
}
