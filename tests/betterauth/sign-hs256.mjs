// Prints an HS256 JWT signed with a shared secret, the way a Next.js route
// might sign its own token:
//   node sign-hs256.mjs --secret S --claims '{"sub":"u1","email":"a@b.c","name":"A"}' [--exp-seconds 900]
import { parseArgs } from "node:util";
import { SignJWT } from "jose";

const { values } = parseArgs({
  options: {
    secret: { type: "string" },
    claims: { type: "string", default: "{}" },
    "exp-seconds": { type: "string", default: "900" },
  },
});
if (!values.secret) {
  console.error("usage: node sign-hs256.mjs --secret S --claims JSON [--exp-seconds N]");
  process.exit(2);
}
const claims = JSON.parse(values.claims);
const expSeconds = Number(values["exp-seconds"]);
if (!Number.isFinite(expSeconds)) {
  console.error("--exp-seconds must be a number");
  process.exit(2);
}

const token = await new SignJWT(claims)
  .setProtectedHeader({ alg: "HS256" })
  .setIssuedAt()
  .setExpirationTime(Math.floor(Date.now() / 1000) + expSeconds)
  .sign(new TextEncoder().encode(values.secret));
process.stdout.write(token + "\n");
