// Better Auth in the browser: same origin as this app, with the jwt plugin's client so that
// authClient.token() returns a JWT for the Todo API.
import { createAuthClient } from "better-auth/react";
import { jwtClient } from "better-auth/client/plugins";

export const authClient = createAuthClient({ plugins: [jwtClient()] });
