// The admins' IdP for the console's "Sign in with your IdP": npm `oidc-provider` on
// 127.0.0.1 with its dev login form (any login name signs in), a public client
// `epochgate-console` (PKCE required) whose redirect URI is the console's callback, and
// JWT access tokens for the control plane's audience that carry the admin's tenant and
// permissions. A fresh RSA key per run. Test-only: it must never face a network.
//
//   IDP_PORT=PORT CONSOLE_REDIRECT_URI=http://127.0.0.1:CP/console/login/oidc/callback \
//     node tests/browser/idp.mjs
import * as crypto from "node:crypto";

import Provider from "oidc-provider";

const port = Number(process.env.IDP_PORT);
const redirectUri = process.env.CONSOLE_REDIRECT_URI;
if (!port || !redirectUri) {
  console.error("set IDP_PORT and CONSOLE_REDIRECT_URI");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
// The access tokens' audience (what --admin-jwt-config requires), for the resource
// indicator the console's requests default to (it must be a URI).
const AUDIENCE = "epochgate-admin";
const RESOURCE = "urn:epochgate:admin";

const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: "jwk" }), kid: "console-idp", alg: "RS256", use: "sig" };

const provider = new Provider(issuer, {
  clients: [{
    client_id: "epochgate-console",
    token_endpoint_auth_method: "none",
    redirect_uris: [redirectUri],
    response_types: ["code"],
    grant_types: ["authorization_code"],
  }],
  jwks: { keys: [signing] },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: "console",
        audience: AUDIENCE,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  // The admin's tenant and permissions, as the control plane's admin JWTs carry them.
  extraTokenClaims: () => ({ tid: "acme", permissions: ["sessions:read", "sessions:revoke", "audit:read"] }),
  pkce: { required: () => true },
  cookies: { keys: [crypto.randomBytes(32).toString("hex")] },
});
provider.proxy = false;
provider.listen(port, "127.0.0.1", () => console.log(`idp listening on ${issuer}`));
