// Test harness: the real better-auth (pinned 1.7.7) on 127.0.0.1:$PORT, so pytest
// can obtain genuine Better Auth JWTs. See README.md for env vars and endpoints.
import http from "node:http";
import pg from "pg";
import { betterAuth } from "better-auth";
import { bearer, jwt } from "better-auth/plugins";
import { createJwk } from "better-auth/plugins/jwt";
import { toNodeHandler } from "better-auth/node";
import { getMigrations } from "better-auth/db/migration";

const env = process.env;
for (const name of ["PORT", "DATABASE_URL", "BETTER_AUTH_SECRET"]) {
  if (!env[name]) {
    console.error(`missing required env var ${name}`);
    process.exit(2);
  }
}
if (env.BETTER_AUTH_SECRET.length < 32) {
  console.error("BETTER_AUTH_SECRET must be at least 32 characters");
  process.exit(2);
}
const port = Number(env.PORT);
const baseURL = env.BETTER_AUTH_URL || `http://127.0.0.1:${port}`;

const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" },
  ES512: { alg: "ES512" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
};
const alg = env.JWT_ALG || "EdDSA";
if (!KEY_PAIR_CONFIGS[alg]) {
  console.error(`JWT_ALG must be one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}`);
  process.exit(2);
}

// COOKIE_CACHE=jwt  -> session_data cookie is an HS256 JWT keyed with BETTER_AUTH_SECRET.
// COOKIE_CACHE=jwks -> same strategy, but the jwt plugin signs it with the JWKS key
//                      (jwt({ sessionCookieCache: true })), typ better-auth.session-cache+jwt.
const cookieCache = env.COOKIE_CACHE || "";
if (!["", "jwt", "jwks"].includes(cookieCache)) {
  console.error("COOKIE_CACHE must be unset, 'jwt' or 'jwks'");
  process.exit(2);
}

const jwtOptions = {
  jwks: { keyPairConfig: KEY_PAIR_CONFIGS[alg] },
  ...(cookieCache === "jwks" ? { sessionCookieCache: true } : {}),
};

const pool = new pg.Pool({ connectionString: env.DATABASE_URL, max: 5 });
const options = {
  baseURL,
  secret: env.BETTER_AUTH_SECRET,
  database: pool,
  emailAndPassword: { enabled: true },
  plugins: [jwt(jwtOptions), bearer()],
  // Tests hammer sign-in; the default limiter is on when NODE_ENV=production.
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  ...(cookieCache
    ? { session: { cookieCache: { enabled: true, strategy: "jwt", maxAge: 300 } } }
    : {}),
};

try {
  const { runMigrations } = await getMigrations(options);
  await runMigrations(); // idempotent: creates user/session/account/verification/jwks
} catch (err) {
  console.error(`migration failed: ${err?.message ?? err}`);
  process.exit(1);
}
const auth = betterAuth(options);
const authHandler = toNodeHandler(auth);

// Rotation: mint a new key pair exactly as the plugin does (createJwk). Newly
// issued tokens use the newest live key; older keys stay in the JWKS unless
// ?drop_old=1, which deletes them (their kids then vanish from /api/auth/jwks).
async function rotate(dropOld) {
  const key = await createJwk({ context: await auth.$context }, jwtOptions);
  if (dropOld) await pool.query('DELETE FROM "jwks" WHERE "id" <> $1', [key.id]);
  return key.id;
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, baseURL);
    if (req.method === "POST" && url.pathname === "/test/rotate") {
      const kid = await rotate(url.searchParams.get("drop_old") === "1");
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ kid }));
      return;
    }
    if (url.pathname.startsWith("/api/auth/")) return await authHandler(req, res);
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "not found" }));
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: String(err?.message ?? err) }));
  }
});

server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`READY ${port}\n`);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  server.closeAllConnections?.();
  server.close(() => pool.end().finally(() => process.exit(0)));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
