//! PostgreSQL with the event table of Axon Framework's JDBC storage engine
//! (`domain_event_entry`: global index, event identifier, aggregate identifier + sequence
//! number unique together, payload bytes), through `tokio-postgres`, one session per client.
//!
//! A transaction is what the JDBC engine does, in one statement instead of a JDBC batch:
//! `BEGIN`, one `INSERT … SELECT … FROM UNNEST(…)` of all its events, `COMMIT`. With the
//! server's `fsync=on` and `synchronous_commit=on`, the commit is acknowledged once its WAL is
//! flushed. Tracking reads page through the global index (`WHERE global_index > $1 ORDER BY
//! global_index LIMIT n`), aggregate reads use the unique (aggregate, sequence) index; both
//! fetch every column, as the engine does.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio_postgres::{NoTls, Statement};

use super::system::{
    AGGREGATE_TYPE, Client, ClientSpec, EventSource, NewEvent, PAYLOAD_REVISION, PAYLOAD_TYPE, System, SystemKind,
    iso8601_utc, now_ms,
};

/// Rows per tracking-read page.
const PAGE_ROWS: i64 = 1024;
/// How long a tailing client waits before asking again when nothing new was there.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Axon Framework's `domain_event_entry`, as its JDBC engine creates it for PostgreSQL.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS domain_event_entry (
    global_index BIGSERIAL PRIMARY KEY,
    event_identifier VARCHAR(255) NOT NULL UNIQUE,
    aggregate_identifier VARCHAR(255) NOT NULL,
    sequence_number BIGINT NOT NULL,
    type VARCHAR(255),
    time_stamp VARCHAR(255) NOT NULL,
    payload_type VARCHAR(255) NOT NULL,
    payload_revision VARCHAR(255),
    payload BYTEA NOT NULL,
    meta_data BYTEA,
    UNIQUE (aggregate_identifier, sequence_number)
)";

const INSERT: &str = "
INSERT INTO domain_event_entry (event_identifier, aggregate_identifier, sequence_number, type, time_stamp,
                                payload_type, payload_revision, payload, meta_data)
SELECT e.id, e.aggregate, e.sequence, $4, $5, $6, $7, e.payload, NULL
FROM UNNEST($1::varchar[], $2::varchar[], $3::bigint[], $8::bytea[]) AS e(id, aggregate, sequence, payload)";

const COLUMNS: &str = "global_index, event_identifier, aggregate_identifier, sequence_number, type, time_stamp, \
                       payload_type, payload_revision, payload, meta_data";

pub struct Postgres {
    config: String,
}

impl Postgres {
    /// `target`: a libpq-style connection string (`host=… port=… user=…`), or `host:port`
    /// for user and database `postgres`. Creates the event table if it is missing.
    pub async fn open(target: &str) -> Result<Self> {
        let config = if target.contains('=') {
            target.to_string()
        } else {
            let (host, port) = target.rsplit_once(':').with_context(|| {
                format!("PostgreSQL target {target:?} is neither host:port nor a connection string")
            })?;
            format!("host={host} port={port} user=postgres dbname=postgres")
        };
        let postgres = Postgres { config };
        let (client, _connection) = postgres.session().await?;
        client
            .batch_execute(SCHEMA)
            .await
            .context("creating the domain_event_entry table")?;
        Ok(postgres)
    }

    async fn session(&self) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        let (client, connection) = tokio_postgres::connect(&self.config, NoTls)
            .await
            .with_context(|| format!("cannot connect to postgres at {:?}", self.config))?;
        // The connection does the I/O; it ends when the client is dropped.
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, task))
    }
}

pub struct PostgresClient {
    client: tokio_postgres::Client,
    source: EventSource,
    insert: Statement,
    page: Statement,
    aggregate: Statement,
}

impl System for Postgres {
    type Client = PostgresClient;

    fn kind(&self) -> SystemKind {
        SystemKind::Postgres
    }

    async fn connect(&self, spec: ClientSpec) -> Result<PostgresClient> {
        let (client, _connection) = self.session().await?;
        let insert = client.prepare(INSERT).await.context("preparing the insert")?;
        let page = client
            .prepare(&format!(
                "SELECT {COLUMNS} FROM domain_event_entry WHERE global_index > $1 ORDER BY global_index LIMIT $2"
            ))
            .await
            .context("preparing the tracking read")?;
        let aggregate = client
            .prepare(&format!(
                "SELECT {COLUMNS} FROM domain_event_entry WHERE aggregate_identifier = $1 ORDER BY sequence_number"
            ))
            .await
            .context("preparing the aggregate read")?;
        Ok(PostgresClient {
            client,
            source: EventSource::new(spec),
            insert,
            page,
            aggregate,
        })
    }
}

/// Takes every column of a row, as an event storage engine must, and returns its global index.
fn decode(row: &tokio_postgres::Row) -> Result<i64> {
    let global_index: i64 = row.try_get(0)?;
    let _identifier: &str = row.try_get(1)?;
    let _aggregate: &str = row.try_get(2)?;
    let _sequence: i64 = row.try_get(3)?;
    let _type: Option<&str> = row.try_get(4)?;
    let _timestamp: &str = row.try_get(5)?;
    let _payload_type: &str = row.try_get(6)?;
    let _revision: Option<&str> = row.try_get(7)?;
    let _payload: &[u8] = row.try_get(8)?;
    let _meta_data: Option<&[u8]> = row.try_get(9)?;
    Ok(global_index)
}

impl PostgresClient {
    /// One page of events after `after`; calls `seen` with its size. Returns the last index.
    async fn page_after(&mut self, after: i64, rows: i64, seen: &mut (dyn FnMut(u64) + Send)) -> Result<(i64, u64)> {
        let page = self
            .client
            .query(&self.page, &[&after, &rows])
            .await
            .context("tracking read page")?;
        let mut last = after;
        for row in &page {
            last = decode(row)?;
        }
        let n = page.len() as u64;
        if n > 0 {
            seen(n);
        }
        Ok((last, n))
    }
}

impl Client for PostgresClient {
    async fn append(&mut self, events: &[NewEvent<'_>]) -> Result<()> {
        let ids: Vec<String> = events.iter().map(|_| self.source.next_identifier()).collect();
        let aggregates: Vec<&str> = events.iter().map(|e| e.aggregate).collect();
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        let payloads: Vec<&[u8]> = events.iter().map(|_| self.source.payload()).collect();
        let timestamp = iso8601_utc(now_ms());
        let transaction = self.client.transaction().await.context("BEGIN")?;
        transaction
            .execute(
                &self.insert,
                &[
                    &ids,
                    &aggregates,
                    &sequences,
                    &AGGREGATE_TYPE,
                    &timestamp,
                    &PAYLOAD_TYPE,
                    &PAYLOAD_REVISION,
                    &payloads,
                ],
            )
            .await
            .context("INSERT into domain_event_entry")?;
        transaction.commit().await.context("COMMIT")?;
        Ok(())
    }

    async fn read_all(&mut self, count: u64, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let mut after = 0i64;
        let mut received = 0u64;
        while received < count {
            let rows = PAGE_ROWS.min(i64::try_from(count - received).unwrap_or(PAGE_ROWS));
            let (last, n) = self.page_after(after, rows, seen).await?;
            if n == 0 {
                break;
            }
            after = last;
            received += n;
        }
        Ok(received)
    }

    async fn read_aggregate(&mut self, aggregate: &str) -> Result<u64> {
        let rows = self
            .client
            .query(&self.aggregate, &[&aggregate])
            .await
            .with_context(|| format!("reading aggregate {aggregate}"))?;
        for row in &rows {
            decode(row)?;
        }
        Ok(rows.len() as u64)
    }

    /// Polls, as the JDBC engine's tracking does. Rows committed out of global-index order
    /// (BIGSERIAL values are taken before commit) can be passed over; the engine tracks such
    /// gaps, a benchmark counting events does not need to.
    async fn tail(&mut self, until: Instant, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let row = self
            .client
            .query_one("SELECT coalesce(max(global_index), 0) FROM domain_event_entry", &[])
            .await
            .context("reading the last global index")?;
        let mut after: i64 = row.try_get(0)?;
        let mut received = 0u64;
        while Instant::now() < until {
            let (last, n) = self.page_after(after, PAGE_ROWS, seen).await?;
            after = last;
            received += n;
            if n == 0 {
                tokio::time::sleep(POLL_INTERVAL.min(until.saturating_duration_since(Instant::now()))).await;
            }
        }
        Ok(received)
    }

    async fn event_count(&mut self) -> Result<u64> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM domain_event_entry", &[])
            .await
            .context("counting events")?;
        let count: i64 = row.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
