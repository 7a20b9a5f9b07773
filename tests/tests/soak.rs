//! The soak: a fixed-rate load of requests from many users' tokens through the real
//! Envoy while logouts (user, session, tenant) happen every 100 ms, scheduled logouts
//! pass and are replaced by the next window, and the control plane is restarted halfway
//! — judged by an oracle that knows for each request whether it must pass.
//!
//! `make soak` runs it (`SOAK_SECONDS`, default 60; `SOAK_RPS`, default 150;
//! `SOAK_WINDOW_MS`, the propagation window, default 50).
//!
//! The oracle applies DESIGN.md's rule exactly, with the `epoch_ms` each logout's 200
//! answer carries: a token is revoked by a user or tenant logout when its session start
//! (`auth_time`, else `iat`) is `<= floor(epoch_ms / 1000)`, and by a session revocation
//! when its `sid` matches; a scheduled logout (tenant, or every tenant) revokes the same
//! way with its `at`, from `at` on — and for good, also after the next window is
//! scheduled in its place. For a request sent at `t`:
//! - it **must be denied** if a logout revoking its token was answered 200 before
//!   `t - window`, the edge is known to hold it (the logout's probe, below, was denied
//!   before `t`), and, for a scheduled one, `t` is at or after its `at`;
//! - it **must pass** if no logout revoking its token had even been sent when its answer
//!   came back (or, for a scheduled one, its answer came back before `at`);
//! - otherwise (a logout in flight, inside the window, not yet at the edge, or `at`
//!   passing meanwhile) either answer is right.
//!
//! So a slow propagation (a loaded machine) is measured and printed, not counted as a
//! false accept: tests judge behaviour, not speed. What is judged is that an edge that
//! holds a logout never lets a token it revoked through, and never refuses one it did not.
//!
//! While the control plane restarts, no admin write is made; writes resume once Envoy
//! polls the new process (its receipt), so the window judges propagation, not the
//! restart's downtime. What the edge held before the restart must stay enforced
//! throughout.
//!
//! A false accept (must be denied, got 200) and a false reject (must pass, got anything
//! else) must both be 0. After each logout a probe polls a token it revokes until the
//! edge denies it: the time from the 200 to that deny is the propagation, whose worst
//! case is printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use epochgate_tests::{http, Stack, ADMIN_TOKEN};

/// What `GET /v1/edges` says of `node` (its last receipt), if anything.
fn last_seen(port: u16, node: &str) -> Option<u64> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = http::request(
        "127.0.0.1",
        port,
        "GET",
        "/v1/edges",
        &[("authorization", auth.as_bytes())],
        b"",
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["edges"].as_array()?.iter().find(|e| e["id"] == node)?["last_seen_ms"].as_u64()
}
use serde_json::json;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A small PRNG (xorshift64*), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const USERS_PER_TENANT: usize = 20;

/// Each user's (tenant, user) current token, with its login generation.
type Tokens = HashMap<(&'static str, String), (u64, Token)>;

/// One user's current token and what the oracle needs of it.
#[derive(Clone)]
struct Token {
    tenant: &'static str,
    user: String,
    sid: String,
    /// `auth_time` if set, else `iat` (seconds).
    start: i64,
    jwt: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    User,
    Session,
    Tenant,
    /// A tenant's scheduled logout (its `at` is `epoch_ms`).
    ScheduledTenant,
    /// Every tenant's scheduled logout.
    ScheduledGlobal,
}

#[derive(Clone)]
struct Logout {
    kind: Kind,
    /// Empty for the global one.
    tenant: &'static str,
    /// The user (User) or the sid (Session).
    id: String,
    sent: Instant,
    answered: Instant,
    epoch_ms: u64,
    /// When its probe's first deny came back: the edge had applied it by then (probed
    /// logouts only; scheduled ones are judged by the window and their `at`).
    applied: Arc<Mutex<Option<Instant>>>,
}

impl Logout {
    fn revokes(&self, t: &Token) -> bool {
        if self.kind != Kind::ScheduledGlobal && t.tenant != self.tenant {
            return false;
        }
        let epoch_s = (self.epoch_ms / 1000) as i64;
        match self.kind {
            Kind::User => t.user == self.id && t.start <= epoch_s,
            Kind::Tenant | Kind::ScheduledTenant | Kind::ScheduledGlobal => t.start <= epoch_s,
            Kind::Session => t.sid == self.id,
        }
    }

    /// A scheduled logout's time (ms since the Unix epoch).
    fn at_ms(&self) -> Option<u64> {
        matches!(self.kind, Kind::ScheduledTenant | Kind::ScheduledGlobal).then_some(self.epoch_ms)
    }

    /// Whether a request must be denied by it: answered a window before, known to be
    /// applied at the edge when the request was sent (its probe was denied before), and
    /// its time come. The window is the oracle's least allowance for propagation; a
    /// slower propagation (a loaded machine) is measured and printed, not judged here —
    /// what is judged is that an edge holding a logout never lets its token through.
    fn must_deny(&self, r: &Record, window: Duration) -> bool {
        let applied = *self.applied.lock().unwrap();
        r.sent >= self.answered + window
            && applied.is_none_or(|a| r.sent >= a)
            && self.at_ms().is_none_or(|at| r.sent_wall >= at)
    }

    /// Whether it cannot have applied to a request: not sent yet, or its time not come.
    fn cannot_apply(&self, r: &Record) -> bool {
        r.done < self.sent || self.at_ms().is_some_and(|at| r.done_wall < at)
    }
}

struct Record {
    token: Token,
    sent: Instant,
    done: Instant,
    /// The wall clock at `sent` and `done` (ms): scheduled logouts apply from a time.
    sent_wall: u64,
    done_wall: u64,
    status: u16,
    error: String,
}

/// An admin write: `(status, body)`, `None` if the control plane could not be reached.
fn admin(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = http::request(
        "127.0.0.1",
        port,
        method,
        path,
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/json"),
        ],
        body.as_bytes(),
    )
    .ok()?;
    Some((
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    ))
}

/// Mints a token as a login (or a refresh of one) would, at the current second.
fn mint(rng: &mut Rng, tenant: &'static str, user: &str, generation: u64) -> Token {
    let now = (wall_ms() / 1000) as i64;
    // Logins happen now or a second or two ago; half of the tokens are refreshes of a
    // login (an older `auth_time` with a fresh `iat`).
    let login = now - rng.below(3) as i64;
    let sid = format!("sid-{tenant}-{user}-{generation}");
    let (extra, start) = if rng.below(2) == 0 {
        (json!({"iat": login, "sid": sid}), login)
    } else {
        (json!({"iat": now, "auth_time": login, "sid": sid}), login)
    };
    Token {
        tenant,
        user: user.to_string(),
        sid,
        start,
        jwt: epochgate_tests::token(user, tenant, extra),
    }
}

fn request(port: u16, token: &Token) -> (u16, String) {
    match http::get_bearer(port, "/api/orders", &token.jwt) {
        Ok(r) => {
            let code = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            (r.status, code)
        }
        Err(e) => (0, format!("transport: {e}")),
    }
}

#[test]
fn soak_with_an_oracle_has_no_false_accepts_and_no_false_rejects() {
    let seconds = env_u64("SOAK_SECONDS", 60);
    let rps = env_u64("SOAK_RPS", 150).max(1);
    let window = Duration::from_millis(env_u64("SOAK_WINDOW_MS", 50));
    let stack = Stack::start();
    let port = stack.envoy_port;
    let cp_port = stack.cp.port;
    let node = stack.node_id.clone();
    // Held by every admin write, and by the restart (which has the stack to itself).
    let stack = Arc::new(Mutex::new(stack));

    let mut rng = Rng::new(wall_ms());
    let users: Vec<(&'static str, String)> = TENANTS
        .iter()
        .flat_map(|t| (0..USERS_PER_TENANT).map(move |i| (*t, format!("u{i}"))))
        .collect();
    let tokens: Arc<Mutex<Tokens>> = Arc::new(Mutex::new(
        users
            .iter()
            .map(|&(t, ref u)| ((t, u.clone()), (0, mint(&mut rng, t, u, 0))))
            .collect(),
    ));
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let logouts: Arc<Mutex<Vec<Logout>>> = Arc::default();
    let propagation: Arc<Mutex<Vec<(Kind, Duration)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut workers_done = Vec::new();

    // Load: `rps` requests a second over 4 workers, each on a fixed schedule (a late
    // worker skips the slots it missed rather than bursting).
    let workers = 4u64;
    let interval = Duration::from_secs_f64(workers as f64 / rps as f64);
    for w in 0..workers {
        let (tokens, records) = (tokens.clone(), records.clone());
        let users = users.clone();
        workers_done.push(thread::spawn(move || {
            let mut rng = Rng::new(wall_ms() ^ (w + 1).wrapping_mul(0x9E37_79B9));
            let mut next = start + interval.mul_f64(w as f64 / workers as f64);
            while next < end {
                let now = Instant::now();
                if now < next {
                    thread::sleep(next - now);
                }
                while next <= Instant::now() {
                    next += interval;
                }
                let (t, u) = &users[rng.below(users.len() as u64) as usize];
                let token = tokens.lock().unwrap()[&(*t, u.clone())].1.clone();
                let (sent, sent_wall) = (Instant::now(), wall_ms());
                let (status, error) = request(port, &token);
                records.lock().unwrap().push(Record {
                    token,
                    sent,
                    done: Instant::now(),
                    sent_wall,
                    done_wall: wall_ms(),
                    status,
                    error,
                });
            }
        }));
    }

    // Logins: every user logs in again every 1–3 s (a new sid, a new session start).
    let minter = {
        let (tokens, stop) = (tokens.clone(), stop.clone());
        let users = users.clone();
        thread::spawn(move || {
            let mut rng = Rng::new(wall_ms() ^ 0xABCD);
            let mut due: Vec<Instant> = users
                .iter()
                .map(|_| start + Duration::from_millis(1000 + rng.below(2000)))
                .collect();
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                for (i, &(t, ref u)) in users.iter().enumerate() {
                    if due[i] <= now {
                        let mut map = tokens.lock().unwrap();
                        let generation = map[&(t, u.clone())].0 + 1;
                        let token = mint(&mut rng, t, u, generation);
                        map.insert((t, u.clone()), (generation, token));
                        due[i] = now + Duration::from_millis(1000 + rng.below(2000));
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Logouts every 100 ms: 70 % user, 20 % session, 10 % tenant. After each 200 a probe
    // polls a token the logout revokes until Envoy denies it.
    let logger = {
        let (tokens, logouts, records, propagation, stack) = (
            tokens.clone(),
            logouts.clone(),
            records.clone(),
            propagation.clone(),
            stack.clone(),
        );
        let users = users.clone();
        thread::spawn(move || {
            let mut rng = Rng::new(wall_ms() ^ 0x1234_5678);
            let mut next = start + Duration::from_millis(500);
            let mut probes = Vec::new();
            while next < end - Duration::from_millis(500) {
                let now = Instant::now();
                if now < next {
                    thread::sleep(next - now);
                }
                next += Duration::from_millis(100);
                let (t, u) = users[rng.below(users.len() as u64) as usize].clone();
                let victim = tokens.lock().unwrap()[&(t, u.clone())].1.clone();
                let roll = rng.below(10);
                let (kind, id, path) = if roll < 7 {
                    (
                        Kind::User,
                        u.clone(),
                        format!("/v1/tenants/{t}/users/{u}/logout"),
                    )
                } else if roll < 9 {
                    let sid = victim.sid.clone();
                    (
                        Kind::Session,
                        sid.clone(),
                        format!("/v1/tenants/{t}/sessions/{sid}/revoke"),
                    )
                } else {
                    (
                        Kind::Tenant,
                        String::new(),
                        format!("/v1/tenants/{t}/logout"),
                    )
                };
                let (sent, answer, answered) = {
                    let _writes = stack.lock().unwrap();
                    let sent = Instant::now();
                    let answer = admin(cp_port, "POST", &path, "");
                    (sent, answer, Instant::now())
                };
                let Some((200, body)) = answer else {
                    panic!("{path}: {answer:?}");
                };
                let logout = Logout {
                    kind,
                    tenant: t,
                    id,
                    sent,
                    answered,
                    epoch_ms: body["epoch_ms"].as_u64().unwrap(),
                    applied: Arc::default(),
                };
                let applied = logout.applied.clone();
                // The victim token was minted before the logout was sent: revoked.
                assert!(
                    logout.revokes(&victim),
                    "oracle: the victim must be revoked"
                );
                logouts.lock().unwrap().push(logout);
                let (records, propagation) = (records.clone(), propagation.clone());
                probes.push(thread::spawn(move || {
                    let deadline = answered + Duration::from_secs(10);
                    loop {
                        let (sent, sent_wall) = (Instant::now(), wall_ms());
                        let (status, error) = request(port, &victim);
                        let done = Instant::now();
                        records.lock().unwrap().push(Record {
                            token: victim.clone(),
                            sent,
                            done,
                            sent_wall,
                            done_wall: wall_ms(),
                            status,
                            error: error.clone(),
                        });
                        if status == 401 && error == "session_revoked" {
                            *applied.lock().unwrap() = Some(done);
                            propagation
                                .lock()
                                .unwrap()
                                .push((kind, done.saturating_duration_since(answered)));
                            return;
                        }
                        if done > deadline {
                            return;
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                }));
            }
            for p in probes {
                p.join().unwrap();
            }
        })
    };

    // Scheduled logouts, every 4 s: one for a tenant (every fourth cycle, every tenant)
    // 1.5 s ahead — first set 3 s ahead and moved earlier while pending, which leaves no
    // trace — then, once it has passed, the next window (tomorrow) scheduled in its
    // place: the passed one stays in force.
    let scheduler = {
        let (logouts, stack) = (logouts.clone(), stack.clone());
        thread::spawn(move || {
            let mut cycle = 0usize;
            let mut next = start + Duration::from_millis(1_000);
            while next < end - Duration::from_secs(3) {
                let now = Instant::now();
                if now < next {
                    thread::sleep(next - now);
                }
                next += Duration::from_secs(4);
                let (kind, tenant, path) = if cycle % 4 == 3 {
                    (Kind::ScheduledGlobal, "", "/v1/logout".to_string())
                } else {
                    let t = TENANTS[cycle % TENANTS.len()];
                    (Kind::ScheduledTenant, t, format!("/v1/tenants/{t}/logout"))
                };
                cycle += 1;
                // `at` is `ahead_ms` from when the write can be made (not from before a
                // restart held it up).
                let write = |ahead_ms: u64| {
                    let _writes = stack.lock().unwrap();
                    let at = epochgate_core::decision::rfc3339_millis(wall_ms() + ahead_ms);
                    let sent = Instant::now();
                    let answer = admin(cp_port, "POST", &path, &format!(r#"{{"at": "{at}"}}"#));
                    let Some((200, body)) = answer else {
                        panic!("{path} at {at}: {answer:?}");
                    };
                    (sent, Instant::now(), body["epoch_ms"].as_u64().unwrap())
                };
                write(3_000);
                let (sent, answered, at_ms) = write(1_500);
                logouts.lock().unwrap().push(Logout {
                    kind,
                    tenant,
                    id: String::new(),
                    sent,
                    answered,
                    epoch_ms: at_ms,
                    applied: Arc::default(),
                });
                // Past `at` (and a little), the next window.
                let wait = at_ms.saturating_sub(wall_ms()) + 700;
                thread::sleep(Duration::from_millis(wait));
                write(86_400_000);
            }
        })
    };

    // Halfway, the control plane restarts (SIGTERM, then the same file): no write meanwhile;
    // writes resume once Envoy polls the new process.
    let restarter = {
        let stack = stack.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(seconds / 2));
            let mut stack = stack.lock().unwrap();
            let restarted = wall_ms();
            stack.cp.proc.terminate();
            stack.cp.restart();
            let back = Instant::now();
            while last_seen(cp_port, &node).is_none_or(|seen| seen < restarted) {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "Envoy did not come back"
                );
                thread::sleep(Duration::from_millis(10));
            }
            println!(
                "control plane restarted; Envoy polled it again {} ms later",
                back.elapsed().as_millis()
            );
        })
    };

    for h in workers_done {
        h.join().unwrap();
    }
    logger.join().unwrap();
    scheduler.join().unwrap();
    restarter.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    minter.join().unwrap();

    // The oracle.
    let logouts = logouts.lock().unwrap();
    let records = records.lock().unwrap();
    let propagation = propagation.lock().unwrap();
    let (mut must_pass, mut must_deny, mut either) = (0u64, 0u64, 0u64);
    let (mut false_accepts, mut false_rejects) = (Vec::new(), Vec::new());
    let (mut passed, mut denied, mut other) = (0u64, 0u64, 0u64);
    for r in records.iter() {
        match (r.status, r.error.as_str()) {
            (200, _) => passed += 1,
            (401, "session_revoked") => denied += 1,
            _ => other += 1,
        }
        let revoking: Vec<&Logout> = logouts.iter().filter(|l| l.revokes(&r.token)).collect();
        let deny = revoking.iter().any(|l| l.must_deny(r, window));
        let pass = revoking.iter().all(|l| l.cannot_apply(r));
        if deny {
            must_deny += 1;
            if r.status == 200 {
                false_accepts.push(r);
            }
        } else if pass {
            must_pass += 1;
            if r.status != 200 {
                false_rejects.push(r);
            }
        } else {
            either += 1;
        }
    }
    let mut props: Vec<Duration> = propagation.iter().map(|(_, d)| *d).collect();
    props.sort();
    let pct = |p: f64| {
        props
            .get(((props.len() as f64 * p) as usize).min(props.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let count = |k: Kind| logouts.iter().filter(|l| l.kind == k).count();
    let probed = logouts.iter().filter(|l| l.at_ms().is_none()).count();
    println!(
        "---- soak: {seconds} s, {rps} req/s target, window {} ms ----",
        window.as_millis()
    );
    println!(
        "requests {} ({:.0}/s): passed {passed}, denied session_revoked {denied}, other {other}",
        records.len(),
        records.len() as f64 / seconds as f64
    );
    println!(
        "logouts {} (user {}, session {}, tenant {}; scheduled, passed and replaced: tenant {}, global {}); one control-plane restart",
        logouts.len(),
        count(Kind::User),
        count(Kind::Session),
        count(Kind::Tenant),
        count(Kind::ScheduledTenant),
        count(Kind::ScheduledGlobal)
    );
    println!(
        "oracle: must pass {must_pass}, must deny {must_deny}, either (in flight, inside the window, not yet at the edge, or `at` passing) {either} ({:.1} %)",
        either as f64 * 100.0 / records.len().max(1) as f64
    );
    println!(
        "false accepts {}, false rejects {}",
        false_accepts.len(),
        false_rejects.len()
    );
    println!(
        "propagation (logout 200 → edge denies): {} measured, p50 {} ms, p99 {} ms, worst {} ms",
        props.len(),
        pct(0.5).as_millis(),
        pct(0.99).as_millis(),
        props.last().copied().unwrap_or_default().as_millis()
    );
    for r in false_accepts.iter().chain(false_rejects.iter()).take(10) {
        println!(
            "  wrong: {}/{} sid {} start {} at +{} ms: {} {}",
            r.token.tenant,
            r.token.user,
            r.token.sid,
            r.token.start,
            r.sent.duration_since(start).as_millis(),
            r.status,
            r.error
        );
    }
    assert!(
        records.len() as u64 >= seconds * rps / 2,
        "the load did not run"
    );
    assert!(probed as u64 >= seconds * 4, "the logouts did not run");
    assert!(
        count(Kind::ScheduledTenant) >= 2 && count(Kind::ScheduledGlobal) >= 1 || seconds < 20,
        "the scheduled logouts did not run"
    );
    assert!(must_deny > 0 && must_pass > 0, "the oracle judged nothing");
    assert_eq!(props.len(), probed, "a logout never reached the edge");
    assert!(false_accepts.is_empty(), "false accepts after the window");
    assert!(false_rejects.is_empty(), "false rejects");
    let stack = stack.lock().unwrap();
    assert!(!stack.envoy.log().contains("panicked"));
}
