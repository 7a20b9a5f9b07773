//! A fake host for native tests: time, shared data, request headers and call answers
//! are injected; responses, header edits, calls and metrics are recorded.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::host::{Host, HostFailure, HttpHost, Metric, SyncHost};

/// A sent local response: status, headers, body.
pub type Sent = (u16, Vec<(String, String)>, Vec<u8>);
/// A dispatched call: cluster, headers.
pub type Call = (String, Vec<(String, String)>);
/// A dispatched POST: headers, body.
pub type Post = (Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
pub struct FakeHost {
    pub now_ms: Cell<u64>,
    pub shared: RefCell<BTreeMap<String, Vec<u8>>>,
    pub metrics: RefCell<HashMap<Metric, u64>>,
    pub request: RefCell<Vec<(String, Vec<u8>)>>,
    pub sent: RefCell<Option<Sent>>,
    pub calls: RefCell<Vec<Call>>,
    pub next_token: Cell<u32>,
    pub fail_dispatch: Cell<bool>,
    pub answer: RefCell<(Option<u16>, Vec<u8>)>,
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    pub grpc_sent: RefCell<Option<(u32, String)>>,
    pub resets: Cell<u32>,
    /// Host calls that fail.
    pub fail: RefCell<Failures>,
    /// Shared-data writes that fail (keys starting with any of these).
    pub refuse_writes: RefCell<Vec<String>>,
    /// The sessions queue between filter VMs and the sync VM.
    pub queue: RefCell<VecDeque<Vec<u8>>>,
    /// The sync VM has not registered the queue (yet): enqueues fail.
    pub no_queue: Cell<bool>,
    /// Dispatched POSTs: headers and body.
    pub posts: RefCell<Vec<Post>>,
    /// How many times each host call was made (what a request costs in host calls).
    pub host_calls: RefCell<BTreeMap<&'static str, u64>>,
}

/// Which host calls fail.
#[derive(Debug, Default, Clone, Copy)]
pub struct Failures {
    pub clock: bool,
    pub header_read: bool,
    pub header_write: bool,
    /// Reads of epoch keys (every key but the status).
    pub epoch_read: bool,
}

impl FakeHost {
    fn count(&self, call: &'static str) {
        *self.host_calls.borrow_mut().entry(call).or_default() += 1;
    }

    pub fn at(now_ms: u64) -> Self {
        let h = Self::default();
        h.now_ms.set(now_ms);
        h
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }

    pub fn with_headers(&self, headers: &[(&str, &[u8])]) -> &Self {
        *self.sent.borrow_mut() = None;
        *self.request.borrow_mut() = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        self
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.request
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn metric_value(&self, m: Metric) -> u64 {
        self.metrics.borrow().get(&m).copied().unwrap_or(0)
    }

    pub fn answer_with(&self, status: Option<u16>, body: &[u8]) {
        *self.answer.borrow_mut() = (status, body.to_vec());
    }

    pub fn last_path(&self) -> String {
        let calls = self.calls.borrow();
        let (_, headers) = calls.last().expect("a call was dispatched");
        headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> Result<u64, HostFailure> {
        self.count("now_ms");
        if self.fail.borrow().clock {
            return Err(HostFailure("get_current_time"));
        }
        Ok(self.now_ms.get())
    }
    fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostFailure> {
        self.count("shared_data");
        if self.fail.borrow().epoch_read && key != epochgate_core::sync::STATUS_KEY {
            return Err(HostFailure("get_shared_data"));
        }
        Ok(self.shared.borrow().get(key).cloned())
    }
    fn set_shared_data(&self, key: &str, value: &[u8]) -> bool {
        self.count("set_shared_data");
        if self
            .refuse_writes
            .borrow()
            .iter()
            .any(|p| key.starts_with(p.as_str()))
        {
            return false;
        }
        self.shared
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        true
    }
    fn metric(&self, metric: Metric, value: u64) {
        self.count("metric");
        let mut m = self.metrics.borrow_mut();
        let e = m.entry(metric).or_insert(0);
        if metric.is_gauge() {
            *e = value;
        } else {
            *e += value;
        }
    }
}

impl HttpHost for FakeHost {
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostFailure> {
        self.count("request_headers");
        if self.fail.borrow().header_read {
            return Err(HostFailure("get_header_map_pairs"));
        }
        Ok(self.request.borrow().clone())
    }
    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostFailure> {
        self.count("set_request_header");
        if self.fail.borrow().header_write {
            return Err(HostFailure("replace_header_map_value"));
        }
        let mut request = self.request.borrow_mut();
        request.retain(|(n, _)| n != name);
        if let Some(value) = value {
            request.push((name.to_string(), value.to_vec()));
        }
        Ok(())
    }
    fn add_response_header(&self, name: &str, value: &str) {
        self.count("add_response_header");
        self.response_headers
            .borrow_mut()
            .push((name.to_string(), value.to_string()));
    }
    fn send_grpc_response(&self, grpc_status: u32, message: &str) {
        self.count("send_grpc_response");
        *self.grpc_sent.borrow_mut() = Some((grpc_status, message.to_string()));
    }
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostFailure> {
        self.count("property");
        Ok(self.properties.borrow().get(&path.join(".")).cloned())
    }
    fn reset_stream(&self) {
        self.count("reset_stream");
        self.resets.set(self.resets.get() + 1);
    }
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        self.count("send_response");
        *self.sent.borrow_mut() = Some((status, headers.to_vec(), body.to_vec()));
    }
    fn enqueue_sessions(&self, payload: &[u8]) -> bool {
        self.count("enqueue_sessions");
        if self.no_queue.get() {
            return false;
        }
        self.queue.borrow_mut().push_back(payload.to_vec());
        true
    }
}

impl SyncHost for FakeHost {
    fn dispatch_get(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout: Duration,
    ) -> Result<u32, String> {
        if self.fail_dispatch.get() {
            return Err("BadArgument".into());
        }
        self.calls.borrow_mut().push((
            cluster.to_string(),
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ));
        self.next_token.set(self.next_token.get() + 1);
        Ok(self.next_token.get())
    }
    fn dispatch_post(
        &self,
        _cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _timeout: Duration,
    ) -> Result<u32, String> {
        if self.fail_dispatch.get() {
            return Err("BadArgument".into());
        }
        self.posts.borrow_mut().push((
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body.to_vec(),
        ));
        self.next_token.set(self.next_token.get() + 1);
        Ok(self.next_token.get())
    }
    fn dequeue_sessions(&self) -> Option<Vec<u8>> {
        self.queue.borrow_mut().pop_front()
    }
    fn call_response(&self, num_headers: usize, _body_size: usize) -> (Option<u16>, Vec<u8>) {
        if num_headers == 0 {
            return (None, Vec::new());
        }
        self.answer.borrow().clone()
    }
}

impl FakeHost {
    pub fn shared_data_value(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.borrow().get(key).cloned()
    }
}

thread_local! {
    /// Calls of [`verify_signature`] on this thread.
    pub static VERIFY_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Envoy's `verify_signature` foreign function for native tests: reads the serialized
/// `VerifySignatureArguments`, verifies as BoringSSL's `EVP_DigestVerify` would — the
/// key parsed from its SubjectPublicKeyInfo, the hash by name, ECDSA signatures in DER,
/// RSA with PKCS#1 v1.5 padding (Envoy sets no other) — with the RustCrypto crates, and
/// answers a serialized `VerifySignatureResult`, Envoy's error texts included. So the
/// filter's native path (DER re-encoding, argument layout, result decoding) runs on real
/// signatures in the unit tests; the e2e tests run it on the real Envoy.
pub fn verify_signature(args: &[u8]) -> Option<Vec<u8>> {
    use p256::pkcs8::DecodePublicKey as _;
    use sha2::Digest as _;
    VERIFY_CALLS.with(|c| c.set(c.get() + 1));
    let mut fields: [&[u8]; 5] = [&[]; 5];
    let mut i = 0;
    while i < args.len() {
        let number = usize::from(args[i] >> 3);
        let (mut len, mut shift) = (0usize, 0);
        i += 1;
        loop {
            let b = args[i];
            i += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        fields[number] = &args[i..i + len];
        i += len;
    }
    let [_, hash, key, signature, text] = fields;
    let verified = match (hash, key) {
        (b"sha256" | b"sha384" | b"sha512", key) => {
            if let Ok(rsa) = rsa::RsaPublicKey::from_public_key_der(key) {
                let scheme = |h: &[u8]| match h {
                    b"sha384" => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    b"sha512" => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    _ => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                };
                let digest = match hash {
                    b"sha384" => sha2::Sha384::digest(text).to_vec(),
                    b"sha512" => sha2::Sha512::digest(text).to_vec(),
                    _ => sha2::Sha256::digest(text).to_vec(),
                };
                Ok(rsa.verify(scheme(hash), &digest, signature).is_ok())
            } else if let Ok(vk) = p256::ecdsa::VerifyingKey::from_public_key_der(key) {
                use p256::ecdsa::signature::DigestVerifier as _;
                let sig = p256::ecdsa::Signature::from_der(signature);
                let digest = match hash {
                    b"sha256" => Some(sha2::Sha256::new_with_prefix(text)),
                    _ => None,
                };
                Ok(match (sig, digest) {
                    (Ok(sig), Some(d)) => vk.verify_digest(d, &sig).is_ok(),
                    _ => false,
                })
            } else if let Ok(vk) = p384::ecdsa::VerifyingKey::from_public_key_der(key) {
                use p384::ecdsa::signature::DigestVerifier as _;
                let sig = p384::ecdsa::Signature::from_der(signature);
                let digest = match hash {
                    b"sha384" => Some(sha2::Sha384::new_with_prefix(text)),
                    _ => None,
                };
                Ok(match (sig, digest) {
                    (Ok(sig), Some(d)) => vk.verify_digest(d, &sig).is_ok(),
                    _ => false,
                })
            } else {
                Err("Failed to initialize digest verify.".to_string())
            }
        }
        (other, _) => Err(format!(
            "{} is not supported.",
            String::from_utf8_lossy(other)
        )),
    };
    let mut out = Vec::new();
    match verified {
        Ok(true) => out.extend_from_slice(&[0x08, 1]),
        Ok(false) => {
            let e = b"Failed to verify digest. Error code: 0";
            out.extend_from_slice(&[0x08, 0, 0x12, e.len() as u8]);
            out.extend_from_slice(e);
        }
        Err(e) => {
            out.extend_from_slice(&[0x08, 0, 0x12, e.len() as u8]);
            out.extend_from_slice(e.as_bytes());
        }
    }
    Some(out)
}
