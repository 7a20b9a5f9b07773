// The admin console in a real Chromium (Debian's, headless, driven by playwright-core),
// against a real control plane and a real Envoy that the Rust e2e test started
// (tests/tests/e2e/console.rs). One browser for the whole scenario:
//
//   sign in → two users' requests through Envoy appear with their devices → Logout on
//   one: its next request through Envoy is 401 (timed from the click), the receipt shows,
//   the other still passes → a bad CSRF token is refused → Logout All with the typed
//   confirmation → schedule, then cancel → Audit and Edges → a tenant admin cannot reach
//   another tenant's page, also by editing the URL → a phone-width screen.
//
// Screenshots of each page go to $SCREENSHOTS. The last line on stdout is a JSON
// object of measurements. Any failed check throws: exit status 1.

import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through tests/tests/e2e/console.rs)`);
  return v;
};
const CP = env("CONSOLE_URL"); // http://127.0.0.1:PORT
const ENVOY = env("ENVOY_URL");
const ADMIN = env("ADMIN_TOKEN");
const TENANT_KEY = env("TENANT_KEY"); // an API key of tenant acme: sessions:read, sessions:revoke
const SECRET = env("JWT_SECRET");
const SHOTS = env("SCREENSHOTS");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = 15000;

const CHROME_UA =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const APP_UA = "AcmeApp/3.2.1 (iPhone; iOS 17.1; Scale/3.00)";

const b64 = (s) => Buffer.from(s).toString("base64url");
/** An HS256 token the e2e filter configuration accepts, issued `ageS` seconds ago. */
function token(sub, extra = {}, ageS = 60) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: "https://idp.e2e.test", aud: "portal", sub, tid: "acme", iat: now - ageS, exp: now + 3600, ...extra };
  const input = `${b64(JSON.stringify({ alg: "HS256", kid: "e2e", typ: "JWT" }))}.${b64(JSON.stringify(claims))}`;
  return `${input}.${createHmac("sha256", SECRET).update(input).digest("base64url")}`;
}

async function envoy(tok, ua = CHROME_UA) {
  const r = await fetch(`${ENVOY}/api/orders`, { headers: { authorization: `Bearer ${tok}`, "user-agent": ua } });
  await r.arrayBuffer();
  return r.status;
}

async function until(what, f) {
  const start = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - start > DEADLINE_MS) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const shots = [];
async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
}

/** The page's flash message and receipt. */
async function flash(page) {
  await page.waitForSelector("[data-flash]");
  return {
    text: await page.textContent("[data-flash] p"),
    receipt: (await page.$("[data-receipt]")) ? await page.textContent("[data-receipt]") : null,
  };
}

mkdirSync(SHOTS, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "epochgate-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 1280, height: 800 },
});
const out = {};
try {
  const page = context.pages()[0] || (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // Refused loads of the 403 pages are expected; script and CSP errors are not.
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && pageErrors.push(m.text()));

  // --- Sign in --------------------------------------------------------------------
  await page.goto(`${CP}/console/`);
  assert.match(page.url(), /\/console\/login$/, "signed out, the console sends you to sign in");
  await shot(page, "1-sign-in");
  // The credential field has the focus; before it, in keyboard order, the brand and
  // first of all the skip link.
  assert.equal(await page.evaluate(() => document.activeElement.id), "credential");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await page.fill("#credential", "not-a-credential-0123456789");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("p.error"), /not an admin credential/);
  await page.fill("#credential", ADMIN);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/users$/);
  const cookies = await context.cookies(`${CP}/console/`);
  const session = cookies.find((c) => c.name === "epochgate_console");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.secure, false, "no Secure on a loopback host");
  assert.equal(session.path, "/console");
  assert.ok(!page.url().includes(ADMIN) && !session.value.includes(ADMIN), "no secret in the URL or cookie");
  const csp = (await page.request.get(`${CP}/console/users`)).headers()["content-security-policy"];
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);

  // --- Two users send requests through Envoy and appear with their devices ----------
  const alice = token("alice", { sid: "alice-laptop" });
  const bob = token("bob");
  for (let i = 0; i < 3; i++) {
    assert.equal(await envoy(alice, CHROME_UA), 200);
    assert.equal(await envoy(bob, APP_UA), 200);
  }
  await page.fill("#tenant", "acme");
  await page.press("#tenant", "Enter");
  await page.waitForURL(/\/console\/tenants\/acme\/users$/);
  await until("alice and bob in the users list", async () => {
    await page.reload();
    return (await page.$('tr[data-user="alice"]')) && (await page.$('tr[data-user="bob"]'));
  });
  assert.match(await page.textContent('tr[data-user="alice"]'), /Chrome 120 on macOS/);
  assert.match(await page.textContent('tr[data-user="bob"]'), /AcmeApp 3\.2\.1 \(iOS\)/);
  await shot(page, "2-users");
  // Search.
  await page.fill("#q", "ALI");
  await page.press("#q", "Enter");
  await page.waitForSelector('tr[data-user="alice"]');
  assert.equal(await page.$('tr[data-user="bob"]'), null, "the search keeps only alice");
  await page.goto(`${CP}/console/tenants/acme/users`);

  // --- Logout on one user: Envoy's next answer is 401, timed from the click ---------
  const clicked = performance.now();
  const navigation = page.click('tr[data-user="alice"] button:has-text("Logout")');
  let status = 200;
  while (status !== 401) {
    status = await envoy(alice);
    assert.ok(performance.now() - clicked < DEADLINE_MS, "alice is refused within the deadline");
  }
  out.click_to_401_ms = Math.round(performance.now() - clicked);
  await navigation;
  const receipt = await flash(page);
  assert.match(receipt.text, /Logged out alice/);
  assert.match(receipt.receipt, /^reached 1\/1 edges in \d+ ms$/);
  out.logout_receipt = receipt.receipt;
  assert.equal(await page.$('tr[data-user="alice"]'), null, "alice left the list of active users");
  assert.equal(await envoy(bob, APP_UA), 200, "bob still passes");
  await shot(page, "3-logout-receipt");

  // --- A user's page: sessions, End session -------------------------------------
  await page.click('tr[data-user="bob"] a');
  await page.waitForURL(/\/users\/bob$/);
  assert.match(await page.textContent("table.sessions"), /AcmeApp 3\.2\.1 \(iOS\)/);
  assert.match(await page.textContent("table.sessions"), /127\.0\.0\.0\/24/, "the address, truncated");
  assert.match(await page.textContent("table.sessions"), /e2e-\d+/, "the edge that saw it");
  await shot(page, "4-user");
  await page.goto(`${CP}/console/tenants/acme/users/alice`);
  assert.match(await page.textContent('tr[data-sid="alice-laptop"]'), /ended/);

  // --- A bad CSRF token is refused ---------------------------------------------
  await page.goto(`${CP}/console/tenants/acme/users/bob`);
  await page.$eval('.head form[action$="/logout"] input[name=csrf]', (i) => (i.value = "forged"));
  await page.click('.head button:has-text("Logout")');
  await page.waitForSelector("[data-error='403']");
  assert.match(await page.textContent("[data-error='403']"), /security token/);
  assert.equal(await envoy(bob, APP_UA), 200, "nothing changed: bob still passes");
  await shot(page, "5-csrf-refused");

  // --- Logout All Users, with the typed confirmation ---------------------------
  await page.goto(`${CP}/console/tenants/acme/users`);
  await page.click("text=Logout All Users");
  const dialog = page.locator("dialog#logout-all");
  await dialog.waitFor({ state: "visible" });
  assert.match(await dialog.locator("[data-reach]").textContent(), /1 user with 1 active session.*1 live edge/s);
  await dialog.locator("textarea[name=reason]").fill("incident 7: tokens leaked");
  await dialog.locator("input[name=confirm]").fill("acm");
  assert.equal(await dialog.locator("[data-confirm-submit]").isDisabled(), true, "the wrong name keeps it off");
  await dialog.locator("input[name=confirm]").fill("acme");
  await shot(page, "6-logout-all-dialog");
  await dialog.locator("[data-confirm-submit]").click();
  const all = await flash(page);
  assert.match(all.text, /Logged out every user of tenant acme/);
  assert.match(all.receipt, /^reached 1\/1 edges in \d+ ms$/);
  await until("bob refused", async () => (await envoy(bob, APP_UA)) === 401);

  // --- Schedule, then cancel ---------------------------------------------------
  await page.click("text=Logout All Users");
  await dialog.waitFor({ state: "visible" });
  await dialog.locator("textarea[name=reason]").fill("maintenance window");
  await dialog.locator("input[name=when][value=at]").check();
  const at = new Date(Date.now() + 2 * 3600 * 1000).toISOString().slice(0, 16); // UTC
  await dialog.locator("input[name=at]").fill(at);
  await dialog.locator("input[name=confirm]").fill("acme");
  assert.match(await dialog.locator("[data-confirm-submit]").textContent(), /Schedule/);
  await dialog.locator("[data-confirm-submit]").click();
  const scheduled = await flash(page);
  assert.match(scheduled.text, new RegExp(`Scheduled the logout of every user of tenant acme at ${at}:00Z`));
  assert.match(await page.textContent("[data-schedule]"), new RegExp(at.replace("T", " ")));
  await shot(page, "7-scheduled");
  // A new login passes, with the advance notice.
  const carol = token("carol", {}, -2); // issued after the tenant's logout
  const notice = await fetch(`${ENVOY}/api/orders`, { headers: { authorization: `Bearer ${carol}` } });
  assert.equal(notice.status, 200);
  assert.equal(notice.headers.get("epochgate-logout-at"), `${at}:00Z`);
  await page.click('[data-schedule] button:has-text("Cancel")');
  const cancelled = await flash(page);
  assert.match(cancelled.text, /Cancelled the scheduled logout of tenant acme/);
  assert.match(cancelled.receipt, /^reached 1\/1 edges in \d+ ms$/);
  assert.equal(await page.$("[data-schedule]"), null, "no schedule is pending any more");
  // The edge dropped it too: no more advance notice.
  await until("the notice gone", async () => {
    const r = await fetch(`${ENVOY}/api/orders`, { headers: { authorization: `Bearer ${carol}` } });
    return r.status === 200 && r.headers.get("epochgate-logout-at") === null;
  });

  // --- Audit and Edges -----------------------------------------------------------
  await page.click("nav >> text=Audit");
  await page.waitForURL(/\/console\/audit$/);
  assert.equal(await page.getAttribute("[data-chain]", "data-chain"), "ok");
  for (const action of ["logout_user", "logout_tenant", "schedule_logout_tenant", "cancel_scheduled_logout_tenant"]) {
    assert.ok(await page.$(`tr[data-action="${action}"]`), `${action} is in the audit log`);
  }
  await page.selectOption("select[name=action]", "logout_tenant");
  await page.click("form.filters button");
  assert.match(await page.textContent("table.audit"), /incident 7: tokens leaked/);
  assert.equal(await page.$('tr[data-action="logout_user"]'), null, "the filter applies");
  await page.goto(`${CP}/console/audit`);
  await shot(page, "8-audit");
  await page.click("nav >> text=Edges");
  await page.waitForSelector('tr[data-edge][data-live="true"]');
  await shot(page, "9-edges");

  // --- Phone width ----------------------------------------------------------------
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  const dave = token("dave", {}, -2);
  assert.equal(await envoy(dave, APP_UA), 200);
  await phone.goto(`${CP}/console/tenants/acme/users`);
  await until("dave in the list", async () => {
    await phone.reload();
    return phone.$('tr[data-user="dave"]');
  });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at phone width (${overflow}px too wide)`);
  await shot(phone, "10-phone");
  await phone.close();

  // --- A tenant admin stays in its tenant -------------------------------------------
  await page.click("button:has-text('Sign out')");
  await page.waitForURL(/\/console\/login$/);
  await page.fill("#credential", TENANT_KEY);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/tenants\/acme\/users$/);
  assert.equal(await page.$("#tenant"), null, "no tenant picker for a tenant admin");
  assert.equal(await page.$("text=Logout All Users"), null, "no Logout All without sessions:revoke_all");
  assert.equal(await page.$("nav >> text=Edges"), null, "no Edges without edges:read");
  assert.ok(await page.$('tr[data-user="dave"] button:has-text("Logout")'), "Logout with sessions:revoke");
  await shot(page, "11-tenant-admin");
  for (const path of ["/console/tenants/globex/users", "/console/tenants/globex/users/mallory", "/console/users?tenant=globex"]) {
    await page.goto(`${CP}${path}`);
    const forbidden = await page.$("[data-error='403']");
    assert.ok(forbidden, `${path}: refused`);
    assert.match(await forbidden.textContent(), /tenant "acme", not "globex"/);
  }
  await shot(page, "12-other-tenant-refused");
  // The server refuses what the page does not show, too.
  const sameOriginPost = await page.evaluate(async () => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch("/console/tenants/acme/logout", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrf, confirm: "acme", reason: "not mine to do", when: "now" }),
    });
    return r.status;
  });
  assert.equal(sameOriginPost, 403, "Logout All is refused without sessions:revoke_all");
  assert.equal(await envoy(dave, APP_UA), 200, "dave still passes");

  // --- Sign in with your IdP (authorization code + PKCE; the access token's RBAC) ---
  await page.click("button:has-text('Sign out')");
  await page.waitForURL(/\/console\/login$/);
  await page.click("text=Sign in with your IdP");
  await page.waitForSelector("input[name=login]"); // the IdP's own login form
  assert.ok(page.url().startsWith(process.env.IDP_URL || "http://127.0.0.1:"), page.url());
  await page.fill("input[name=login]", "ops-alice");
  await page.fill("input[name=password]", "any");
  await page.click("button[type=submit]");
  await page.waitForSelector("button[type=submit]"); // consent
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/tenants\/acme\/users$/);
  assert.equal(await page.textContent(".who .actor"), "jwt:ops-alice");
  assert.equal(await page.$("#tenant"), null, "the IdP's admin is a tenant admin of acme");
  await shot(page, "13-signed-in-with-idp");
  await page.click('tr[data-user="dave"] button:has-text("Logout")');
  assert.match((await flash(page)).text, /Logged out dave/);
  await until("dave refused", async () => (await envoy(dave, APP_UA)) === 401);

  assert.deepEqual(pageErrors, [], "no script or CSP errors on any page");
  out.screenshots = shots;
  console.log(JSON.stringify(out));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
