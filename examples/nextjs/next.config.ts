import path from "node:path";
import type { NextConfig } from "next";

// The typed client lives in ../../clients/typescript (TypeScript source, linked by npm as
// todo-api-client): Next compiles it, and the repository is the root it may read files from.
const root = path.join(__dirname, "..", "..");

const nextConfig: NextConfig = {
  transpilePackages: ["todo-api-client"],
  turbopack: { root },
  outputFileTracingRoot: root,
  serverExternalPackages: ["better-sqlite3", "pg"],
  poweredByHeader: false,
};

export default nextConfig;
