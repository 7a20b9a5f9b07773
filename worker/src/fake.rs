//! A fake host for tests: time and the control plane's answers are injected; the sync
//! calls, the signature checks and log lines are recorded. Its signature checks are real:
//! under node (`make test-worker-wasm`) the real WebCrypto ([`crate::js::JsHost`]),
//! natively `core`'s pure-Rust verifier (the native test build has every algorithm), so
//! the glue's asynchronous signature path runs on real signatures either way.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use epochgate_core::jwt::VerificationKey;

use crate::host::{GetResult, Host, Level};

#[derive(Default)]
pub struct FakeHost {
    pub now_ms: Cell<u64>,
    /// Answers to the next GETs, in order; none left is a refused connection.
    pub answers: RefCell<VecDeque<GetResult>>,
    /// `(url, bearer)` of every GET.
    pub calls: RefCell<Vec<(String, String)>>,
    pub logs: RefCell<Vec<(Level, String)>>,
    /// `(alg, kid)` of every signature check asked of the host.
    pub signature_checks: RefCell<Vec<(String, Option<String>)>>,
    /// When set, every signature check fails with this error (a key WebCrypto refuses).
    pub crypto_error: RefCell<Option<String>>,
    /// URLs of every credential-less GET (the JWKS), and their answers (none left: a
    /// refused connection).
    pub public_calls: RefCell<Vec<String>>,
    pub public_answers: RefCell<VecDeque<GetResult>>,
    /// `(url, bearer, body)` of every POST, and their answers (none left: 200).
    pub posts: RefCell<Vec<(String, String, Vec<u8>)>>,
    pub post_answers: RefCell<VecDeque<GetResult>>,
}

impl FakeHost {
    pub fn at(now_ms: u64) -> Self {
        let h = Self::default();
        h.now_ms.set(now_ms);
        h
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }

    pub fn answer(&self, status: u16, body: impl Into<Vec<u8>>) {
        self.answers
            .borrow_mut()
            .push_back(Ok((status, body.into())));
    }

    pub fn answer_json(&self, body: &serde_json::Value) {
        self.answer(200, body.to_string());
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|(_, l)| l.contains(needle))
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn get(&self, url: &str, bearer: &str, _timeout_ms: u64) -> impl Future<Output = GetResult> {
        self.calls
            .borrow_mut()
            .push((url.to_string(), bearer.to_string()));
        let answer = self
            .answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err("connection refused".into()));
        std::future::ready(answer)
    }

    fn get_public(&self, url: &str, _timeout_ms: u64) -> impl Future<Output = GetResult> {
        self.public_calls.borrow_mut().push(url.to_string());
        let answer = self
            .public_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err("connection refused".into()));
        std::future::ready(answer)
    }

    fn post(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
        _timeout_ms: u64,
    ) -> impl Future<Output = GetResult> {
        self.posts
            .borrow_mut()
            .push((url.to_string(), bearer.to_string(), body.to_vec()));
        let answer = self
            .post_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Ok((200, br#"{"accepted":0}"#.to_vec())));
        std::future::ready(answer)
    }

    /// Time passes; nothing else happens meanwhile (one request at a time).
    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        self.advance(ms);
        std::future::ready(())
    }

    fn verify_signature(
        &self,
        key: &VerificationKey,
        input: &[u8],
        signature: &[u8],
    ) -> impl Future<Output = Result<bool, String>> {
        self.signature_checks
            .borrow_mut()
            .push((key.alg.to_string(), key.kid.clone()));
        let error = self.crypto_error.borrow().clone();
        async move {
            if let Some(e) = error {
                return Err(e);
            }
            #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
            return crate::js::JsHost
                .verify_signature(key, input, signature)
                .await;
            #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
            {
                use epochgate_core::jwt::{PureRustVerifier, SignatureVerifier as _};
                Ok(PureRustVerifier.verify(key, input, signature))
            }
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }
}

/// Runs a future that never waits on anything real (the fake host answers at once).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a fake-host future did not complete at once"),
    }
}
