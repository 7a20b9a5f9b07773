// A real OpenID Provider for the end-to-end tests and the bench: npm `oidc-provider` on
// 127.0.0.1, with back-channel logout and RP-initiated logout enabled, its dev login form
// (any login name signs in), JWT access tokens that carry the session's `sid`, and a
// fresh RSA signing key per run.
//
//   IDP_PORT=PORT IDP_BACKCHANNEL_URI=http://127.0.0.1:CP/v1/idp/NAME/backchannel-logout \
//     node tests/idp/provider.mjs
//
// Prints `idp listening on http://127.0.0.1:PORT` once it serves. `POST /test/end-sessions`
// with `sub=<user>` stands for an admin ending a user's sessions at the IdP (Keycloak's
// "Sign out", Okta's "Clear user sessions"): the provider sends a `sub`-only logout token.
// Test-only: it takes no credential and must never face a network.
import * as crypto from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const backchannelLogoutUri = process.env.IDP_BACKCHANNEL_URI;
if (!port || !backchannelLogoutUri) {
  console.error('set IDP_PORT and IDP_BACKCHANNEL_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'https://api.portal.test';

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `rsa-${crypto.randomBytes(4).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'portal',
    client_secret: 'portal-client-secret-0123456789',
    redirect_uris: ['http://127.0.0.1/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1/signed-out'],
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    backchannel_logout_uri: backchannelLogoutUri,
    backchannel_logout_session_required: true,
  }],
  jwks: { keys: [signing] },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: RESOURCE,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // The edge revokes sessions by the access token's `sid` (the logout token's).
  extraTokenClaims: (ctx, token) => ({ sid: token.sid }),
  // Its default fetch refuses loopback addresses (an SSRF guard); the control plane
  // listens on 127.0.0.1 here.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  pkce: { required: () => true },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
});
provider.proxy = false;

provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  console.error(`backchannel.error client=${client.clientId} sub=${accountId} sid=${sid}: ${err.message}`);
});
provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  console.log(`backchannel.success client=${client.clientId} sub=${accountId} sid=${sid}`);
});

// The IdP ends every session of a user (no sid): one logout token per client.
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/test/end-sessions') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const sub = new URLSearchParams(Buffer.concat(chunks).toString()).get('sub');
    if (!sub) {
      ctx.status = 400;
      ctx.body = { error: 'sub is required' };
      return;
    }
    const client = await provider.Client.find('portal');
    try {
      await client.backchannelLogout(sub, undefined);
      ctx.status = 200;
      ctx.body = { sent: true };
    } catch (err) {
      ctx.status = 502;
      ctx.body = { error: err.message };
    }
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`idp listening on ${issuer}`);
});
