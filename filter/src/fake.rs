//! A fake host for native tests: time, shared data, request headers and call answers
//! are injected; responses, header edits, calls and metrics are recorded.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::host::{Host, HttpHost, Metric, SyncHost};

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
    /// The sessions queue between filter VMs and the sync VM.
    pub queue: RefCell<VecDeque<Vec<u8>>>,
    /// The sync VM has not registered the queue (yet): enqueues fail.
    pub no_queue: Cell<bool>,
    /// Dispatched POSTs: headers and body.
    pub posts: RefCell<Vec<Post>>,
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
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
    fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.borrow().get(key).cloned()
    }
    fn set_shared_data(&self, key: &str, value: &[u8]) -> bool {
        self.shared
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        true
    }
    fn metric(&self, metric: Metric, value: u64) {
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
    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.request.borrow().clone()
    }
    fn set_request_header(&self, name: &str, value: Option<&[u8]>) {
        let mut request = self.request.borrow_mut();
        request.retain(|(n, _)| n != name);
        if let Some(value) = value {
            request.push((name.to_string(), value.to_vec()));
        }
    }
    fn add_response_header(&self, name: &str, value: &str) {
        self.response_headers
            .borrow_mut()
            .push((name.to_string(), value.to_string()));
    }
    fn send_grpc_response(&self, grpc_status: u32, message: &str) {
        *self.grpc_sent.borrow_mut() = Some((grpc_status, message.to_string()));
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.borrow().get(&path.join(".")).cloned()
    }
    fn reset_stream(&self) {
        self.resets.set(self.resets.get() + 1);
    }
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        *self.sent.borrow_mut() = Some((status, headers.to_vec(), body.to_vec()));
    }
    fn enqueue_sessions(&self, payload: &[u8]) -> bool {
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
