//! The seam between the store's logic and a SQL database: values, rows, and one
//! transaction trait each backend implements.
//!
//! The operations ([`super::core`]) are written once as `async fn`s over
//! `&mut dyn Tx`, with SQL in one dialect both databases accept: `$1`-numbered
//! parameters (turned into SQLite's `?1` by its backend), `CASE` instead of
//! `max(a, b)`/`GREATEST`, `CAST($1 AS TEXT)` where Postgres must know a parameter's type.
//! What genuinely differs — how a transaction is opened and locked, how other replicas
//! are told of a commit — is the backend's ([`Backend`], [`Tx::announce`]).
//!
//! SQLite's calls are blocking and never pend: its backend runs an operation on a
//! blocking thread and polls it once ([`poll_ready`]). Postgres's are awaited on the
//! runtime. So the same body serves both without blocking an async worker.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::{BoxFuture, StoreError};

/// A SQL value, as a parameter or a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<u64> for Value {
    /// Versions, times and ids are `u64` in Rust and signed 64-bit in both databases;
    /// none comes near `i64::MAX`, which a larger value saturates to.
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `[Value]` from a list of expressions: `params![a, b, c]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        [$($crate::store::sql::Value::from($v)),*]
    };
}
pub(crate) use params;

/// One result row. Getters name the column on a type mismatch, so a schema drift shows
/// as [`StoreError::Corrupt`], never as a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))
    }

    fn mismatch(&self, i: usize, want: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "column {i} is {:?}, expected {want}",
            self.0.get(i)
        ))
    }

    pub fn opt_u64(&self, i: usize) -> Result<Option<u64>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => u64::try_from(*v)
                .map(Some)
                .map_err(|_| self.mismatch(i, "a non-negative integer")),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    /// A signed integer (a session start may precede 1970 in a hostile token).
    pub fn i64(&self, i: usize) -> Result<i64, StoreError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    pub fn u64(&self, i: usize) -> Result<u64, StoreError> {
        self.opt_u64(i)?
            .ok_or_else(|| self.mismatch(i, "an integer"))
    }

    /// Takes a text column out of the row (leaving `Null`): rows are read once.
    pub fn take_opt_text(&mut self, i: usize) -> Result<Option<String>, StoreError> {
        match self.0.get_mut(i) {
            Some(Value::Text(s)) => Ok(Some(std::mem::take(s))),
            Some(Value::Null) => Ok(None),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub fn take_text(&mut self, i: usize) -> Result<String, StoreError> {
        self.take_opt_text(i)?
            .ok_or_else(|| self.mismatch(i, "text"))
    }

    /// A boolean: Postgres's `boolean`, SQLite's 0/1.
    pub fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.at(i)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(v) => Ok(*v != 0),
            _ => Err(self.mismatch(i, "a boolean")),
        }
    }
}

/// An open transaction (or, for [`Access::Autocommit`], a connection whose every
/// statement commits on its own).
pub trait Tx: Send {
    /// Runs a statement and returns its rows (`RETURNING` rows for a write).
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>>;

    /// Runs a statement and returns how many rows it changed.
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Tells the other replicas, on commit, that `version` is committed (Postgres:
    /// `pg_notify` inside the transaction; SQLite, one process: nothing).
    fn announce(&mut self, version: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl dyn Tx + '_ {
    /// The one row a statement must answer.
    pub async fn one(&mut self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.opt(sql, params).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "no row for {}",
                sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
            ))
        })
    }

    /// At most one row.
    pub async fn opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// How an operation uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Each statement commits on its own: single reads, and bookkeeping writes that a
    /// crash may lose without harm (edge receipts). SQLite: the read connection
    /// (`synchronous=NORMAL`).
    Autocommit,
    /// Several reads that must agree: one read-only transaction (SQLite: one WAL
    /// snapshot; Postgres: `REPEATABLE READ`).
    Snapshot,
    /// Several bookkeeping writes in one transaction that takes no serial lock, so it
    /// never holds up a revocation on Postgres (the sessions edges report). SQLite: one
    /// `BEGIN IMMEDIATE` on the `synchronous=NORMAL` connection.
    Batch,
    /// A write that takes the store's single writer lock and is durable when the call
    /// returns (SQLite: `BEGIN IMMEDIATE` on the `synchronous=FULL` connection;
    /// Postgres: the `meta` row locked `FOR UPDATE` first), so writes — versions and
    /// audit ids — are serial across connections and replicas.
    Serial,
}

/// An operation on an open transaction. Written as
/// `|tx| Box::pin(async move { … })`.
pub trait TxFn<T>:
    for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static
{
}

impl<T, F> TxFn<T> for F where
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static
{
}

/// A database the store's operations run on.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `op` with the given access, committing if it succeeds and rolling back if
    /// not; returns once the commit is done (for [`Access::Serial`]: durable).
    fn run<T: Send + 'static>(
        &self,
        access: Access,
        op: impl TxFn<T>,
    ) -> BoxFuture<'_, Result<T, StoreError>>;
}

/// Polls a future that cannot pend (an operation over SQLite's blocking calls) once.
pub fn poll_ready<T>(future: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        // Only if an operation awaited something other than its transaction.
        Poll::Pending => Err(StoreError::Task(
            "a SQLite operation awaited something besides the database".into(),
        )),
    }
}

/// `$1` → `?1`: SQLite's numbered parameters. A `$` inside a string literal would be
/// rewritten too; the store's SQL has none.
pub fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_numbered_parameters() {
        assert_eq!(
            sqlite_placeholders("SELECT $1, $12 WHERE a = $2 AND b = '$'"),
            "SELECT ?1, ?12 WHERE a = ?2 AND b = '$'"
        );
    }

    #[test]
    fn rows_name_type_mismatches() {
        let mut row = Row(vec![Value::Int(-1), Value::Text("x".into()), Value::Null]);
        assert!(matches!(row.u64(0), Err(StoreError::Corrupt(_))));
        assert_eq!(row.take_text(1).unwrap(), "x");
        assert_eq!(row.opt_u64(2).unwrap(), None);
        assert!(row.u64(2).is_err());
        assert!(row.u64(9).is_err());
        assert!(Row(vec![Value::Int(1)]).bool(0).unwrap());
        assert_eq!(Value::from(u64::MAX), Value::Int(i64::MAX));
    }
}
