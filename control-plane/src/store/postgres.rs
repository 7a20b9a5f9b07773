//! The Postgres backend, for several control-plane replicas on one database.
//!
//! - **Serial versions.** Every serial write ([`Access::Serial`]) starts by locking the
//!   `meta` row (`FOR UPDATE`), held until commit, then bumps its counter: writers on
//!   every replica queue on it and commit in version order (a sequence would let v11
//!   commit before v10). Audit appends and compaction take the same lock, so the audit
//!   chain is serial too.
//! - **Wake every replica.** The write transaction also runs `pg_notify('epochgate_versions',
//!   version)`, delivered on commit to every replica's listener connection, which raises
//!   the local watch that long-polls wait on. A fallback reads the version once a second,
//!   so a lost listener connection delays a wake-up by at most a second, never loses it.
//! - **Consistent reads.** A sync reads the head and the rows in one REPEATABLE READ
//!   transaction.
//!
//! The operations themselves are in [`super::core`]; this file opens connections and
//! transactions, creates the schema, and listens for the other replicas' commits.
//!
//! Connections: a [deadpool] pool (`--db-pool-size`, `--db-pool-timeout`), plus the
//! listener's own connection, all over TLS when `sslmode` asks (see [`pg_config`]).
//! Background tasks hold only a weak reference and end when the store is dropped.
//!
//! [deadpool]: deadpool_postgres
//! [`pg_config`]: super::pg_config

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, IsolationLevel, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::core::{init_head, SqlStore, Versions};
use super::pg_config::{self, PgOptions, SslMode};
use super::sql::{Access, Backend, Row, Tx, TxFn, Value};
use super::{BoxFuture, StoreError};

/// The channel every replica listens on; the payload is the committed version.
const CHANNEL: &str = "epochgate_versions";

/// Serializes schema creation across replicas starting at once.
const SCHEMA_LOCK: i64 = 0x6570_6f63_6867;

/// The Postgres store.
pub type PgStore = SqlStore<Postgres>;

/// The Postgres database: a pool of connections. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl From<PoolError> for StoreError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

impl SqlStore<Postgres> {
    /// [`SqlStore::connect_with`] with the default pool and the URL's own password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PgOptions::default()).await
    }

    /// Connects (refusing a certificate `sslmode` does not accept), creates the schema if
    /// missing (once, under an advisory lock), and starts the listener.
    pub async fn connect_with(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let target = pg_config::parse(url, options)?;
        if target.ssl_mode == SslMode::Require && target.root_cert.is_none() {
            tracing::warn!(
                "sslmode=require without sslrootcert: the connection to Postgres is encrypted, \
                 but its certificate is not verified (use verify-full with sslrootcert)"
            );
        }
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.pool_timeout))
            .create_timeout(Some(options.pool_timeout))
            .recycle_timeout(Some(options.pool_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let (stream, version) = {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await?;
            tx.batch_execute(&super::core::schema("BIGINT")).await?;
            let head = init_head(&mut PgTx(Conn::Tx(&tx))).await?;
            tx.commit().await?;
            head
        };
        let store = SqlStore::new(Postgres { pool }, stream, version);
        tokio::spawn(listen(
            target.config,
            target.tls,
            Arc::downgrade(store.versions()),
        ));
        Ok(store)
    }
}

/// Keeps the watch at the highest committed version: `LISTEN` for every replica's commits,
/// and a once-a-second read as a fallback. Ends when the store is dropped.
async fn listen(config: tokio_postgres::Config, tls: MakeRustlsConnect, versions: Weak<Versions>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let conn = config.connect(tls.clone()).await;
        let (client, mut connection) = match conn {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "the Postgres listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if versions.upgrade().is_none() {
                    return;
                }
                continue;
            }
        };
        let (msg_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = stream.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if msg_tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "the Postgres listener connection failed");
                        return;
                    }
                }
            }
        });
        if let Err(err) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            tokio::select! {
                payload = messages.recv() => match payload {
                    Some(p) => {
                        let Some(versions) = versions.upgrade() else { return };
                        if let Ok(v) = p.parse::<u64>() {
                            versions.notify(v);
                        }
                    }
                    None => break, // the connection ended: reconnect
                },
                _ = tick.tick() => {
                    let Some(versions) = versions.upgrade() else {
                        driver.abort();
                        return;
                    };
                    match client.query_one("SELECT version FROM meta WHERE id = 1", &[]).await {
                        Ok(row) => versions.notify(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
                        Err(err) => tracing::warn!(error = %err, "cannot read the version"),
                    }
                }
            }
        }
        driver.abort();
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                _ => Err(format!("an integer parameter where {ty} is expected").into()),
            },
            Value::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            Value::Bool(b) if <bool as ToSql>::accepts(ty) => b.to_sql(ty, out),
            Value::Text(_) | Value::Bool(_) => {
                Err(format!("parameter {self:?} where {ty} is expected").into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn value_at(row: &tokio_postgres::Row, i: usize) -> Result<Value, StoreError> {
    let ty = row
        .columns()
        .get(i)
        .map(|c| c.type_().clone())
        .ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))?;
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
        _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Where statements go: an open transaction, or a client in autocommit.
enum Conn<'t> {
    Tx(&'t Transaction<'t>),
    Client(&'t Client),
}

struct PgTx<'t>(Conn<'t>);

impl PgTx<'_> {
    async fn rows(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        Ok(match &self.0 {
            Conn::Tx(tx) => tx.query(sql, &params).await?,
            Conn::Client(c) => c.query(sql, &params).await?,
        })
    }
}

impl Tx for PgTx<'_> {
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            self.rows(sql, params)
                .await?
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| value_at(r, i))
                        .collect::<Result<_, _>>()
                        .map(Row)
                })
                .collect()
        })
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let params: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            Ok(match &self.0 {
                Conn::Tx(tx) => tx.execute(sql, &params).await?,
                Conn::Client(c) => c.execute(sql, &params).await?,
            })
        })
    }

    /// `NOTIFY` every replica's listener; delivered only if the transaction commits.
    fn announce(&mut self, version: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(
                "SELECT pg_notify($1, $2)",
                &[Value::from(CHANNEL), Value::from(version.to_string())],
            )
            .await?;
            Ok(())
        })
    }
}

impl Backend for Postgres {
    fn run<T: Send + 'static>(
        &self,
        access: Access,
        op: impl TxFn<T>,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        Box::pin(async move {
            let mut client = self.pool.get().await?;
            match access {
                Access::Autocommit => op(&mut PgTx(Conn::Client(&client))).await,
                Access::Snapshot | Access::Serial | Access::Batch => {
                    let tx = if access == Access::Snapshot {
                        client
                            .build_transaction()
                            .isolation_level(IsolationLevel::RepeatableRead)
                            .read_only(true)
                            .start()
                            .await?
                    } else if access == Access::Batch {
                        client.transaction().await?
                    } else {
                        let tx = client.transaction().await?;
                        // The writer lock: every serial write on every replica queues here,
                        // so versions and audit ids commit in order.
                        tx.execute("SELECT 1 FROM meta WHERE id = 1 FOR UPDATE", &[])
                            .await?;
                        tx
                    };
                    let out = op(&mut PgTx(Conn::Tx(&tx))).await?;
                    tx.commit().await?;
                    Ok(out)
                }
            }
        })
    }
}
