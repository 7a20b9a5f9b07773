//! The SQLite backend: one file, WAL, every serial write one `BEGIN IMMEDIATE`
//! transaction. The operations themselves are in [`super::core`].
//!
//! Two connections, each behind a mutex and used only from blocking threads
//! (`spawn_blocking`), never on the async runtime:
//! - `write` (`synchronous=FULL`): [`Access::Serial`] — revocations, audit appends and
//!   compaction. In WAL mode FULL syncs the WAL on every commit, so a revocation answered
//!   200 survives a SIGKILL *and* a power loss; a revocation that silently disappears is
//!   a logged-out attacker let back in.
//! - `read` (`synchronous=NORMAL`): [`Access::Snapshot`] and [`Access::Autocommit`] —
//!   sync, listings, and the edges' receipts. Receipts are bookkeeping rewritten on every
//!   poll; NORMAL in WAL mode still survives a process crash and skips an fsync per poll.
//!   WAL lets these reads run while a write commits.
//!
//! `BEGIN IMMEDIATE` takes the write lock up front, so two writers (two connections,
//! or two processes on one file) serialize on the counter row instead of failing their
//! upgrade from a read lock halfway; `busy_timeout` makes the loser wait, not error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ToSql};

use super::core::{init_head, SqlStore};
use super::sql::{poll_ready, sqlite_placeholders, Access, Backend, Row, Tx, TxFn, Value};
use super::{BoxFuture, StoreError};

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema this code writes, kept in `PRAGMA user_version` for future migrations.
const SCHEMA_VERSION: i64 = 3;

/// The schema in SQLite's words: 64-bit columns are `INTEGER` (the audit id the rowid).
fn schema() -> String {
    super::core::schema("INTEGER")
}

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

/// The SQLite database: its file and two connections. Cheap to clone (the blocking
/// threads that run its calls hold a handle).
#[derive(Clone)]
pub struct Sqlite(Arc<Connections>);

struct Connections {
    path: PathBuf,
    write: Mutex<Connection>,
    read: Mutex<Connection>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.0.path)
            .finish_non_exhaustive()
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating if missing, with its parent directory) the database at `path`.
    /// Blocking: call it from a blocking context (see [`super::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let mut write = connect(&path, "FULL")?;
        let (stream, version) = init_schema(&mut write)?;
        let read = connect(&path, "NORMAL")?;
        let backend = Sqlite(Arc::new(Connections {
            path,
            write: Mutex::new(write),
            read: Mutex::new(read),
        }));
        Ok(SqlStore::new(backend, stream, version))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.backend.0.path
    }
}

fn connect(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers a row (the mode now in force); read it rather than execute.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "{} refuses WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))?;
    Ok(conn)
}

/// Creates the tables and the meta row if missing; returns the stream and version.
fn init_schema(conn: &mut Connection) -> Result<(String, u64), StoreError> {
    let mut tx = SqliteTx::begin(conn, Some("BEGIN IMMEDIATE"))?;
    let result = (|| {
        let found: i64 = tx.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "database schema {found} is newer than this build's {SCHEMA_VERSION}"
            )));
        }
        if found == 1 {
            return Err(StoreError::Corrupt(
                "this database was written by an earlier build whose audit log is not \
                 hash-chained (schema 1); move it aside and start with a new file"
                    .into(),
            ));
        }
        tx.conn.execute_batch(&schema())?;
        tx.conn
            .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        poll_ready(init_head(&mut tx))
    })();
    tx.finish(result)
}

/// Runs `op` on `conn` in the transaction `access` asks for (see [`Access`]); blocking.
fn run_in<T>(conn: &mut Connection, access: Access, op: impl TxFn<T>) -> Result<T, StoreError> {
    let begin = match access {
        Access::Autocommit => None,
        Access::Snapshot => Some("BEGIN DEFERRED"),
        Access::Serial | Access::Batch => Some("BEGIN IMMEDIATE"),
    };
    let mut tx = SqliteTx::begin(conn, begin)?;
    let result = poll_ready(op(&mut tx));
    tx.finish(result)
}

/// A connection inside (or, for [`Access::Autocommit`], outside) a transaction. Rolls
/// back on drop if the transaction is still open (a panic mid-operation).
struct SqliteTx<'c> {
    conn: &'c mut Connection,
    open: bool,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl<'c> SqliteTx<'c> {
    /// Opens a transaction with `begin` (`None`: autocommit).
    fn begin(conn: &'c mut Connection, begin: Option<&str>) -> Result<Self, StoreError> {
        if let Some(begin) = begin {
            conn.execute_batch(begin)?;
        }
        Ok(SqliteTx {
            conn,
            open: begin.is_some(),
        })
    }

    /// Commits if `result` is a success, else rolls back; a failed commit is the error.
    fn finish<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if self.open {
            match &result {
                // A failed COMMIT leaves the transaction open: dropping rolls it back.
                Ok(_) => self.conn.execute_batch("COMMIT")?,
                Err(_) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
            }
            self.open = false;
        }
        result
    }

    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let columns = stmt.column_count();
        let params: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
        let mut rows = stmt.query(params.as_slice())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| {
                                StoreError::Corrupt(format!("column {i} is not UTF-8: {e}"))
                            })?
                            .to_string(),
                    ),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(StoreError::Corrupt(format!(
                            "column {i} is neither an integer nor text"
                        )))
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn changed(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let params: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
        Ok(u64::try_from(stmt.execute(params.as_slice())?).unwrap_or(u64::MAX))
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match self {
            Value::Null => ToSqlOutput::from(rusqlite::types::Null),
            Value::Int(v) => ToSqlOutput::from(*v),
            Value::Text(s) => ToSqlOutput::from(s.as_str()),
            Value::Bool(b) => ToSqlOutput::from(*b),
        })
    }
}

impl Tx for SqliteTx<'_> {
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(std::future::ready(self.rows(sql, params)))
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(std::future::ready(self.changed(sql, params)))
    }

    /// One process per file: the in-process watch is all there is to tell.
    fn announce(&mut self, _version: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Backend for Sqlite {
    fn run<T: Send + 'static>(
        &self,
        access: Access,
        op: impl TxFn<T>,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let db = Arc::clone(&self.0);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = match access {
                    Access::Serial => &db.write,
                    Access::Snapshot | Access::Autocommit | Access::Batch => &db.read,
                };
                let mut conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
                run_in(&mut conn, access, op)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}
