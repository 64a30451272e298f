//! The seam between sources and the job loop: a source yields chunks (at
//! most `maxRowsPerBatch` rows each), each with the progress the job commits
//! once the chunk's output is delivered and the position that tells a
//! resumed chunk apart. Local tables ([`LocalSource`]) and ADX windows
//! ([`super::kusto::windows::KustoSource`]) both yield them; the job loop in
//! `schedule/job.rs` does not know which one it reads.

use std::path::PathBuf;

use super::InputError;
use super::input::InputFormat;
use super::kusto::KustoError;
use super::kusto::windows::KustoSource;
use super::local_table::{BadRow, LocalTable, table_path};
use crate::error::{Classify, RetryClass};
use crate::state::{Cursor, PartialChunk, Progress};
use crate::wit::{Batch, BatchContext};

/// A chunk of rows on its way to the guest.
pub struct Chunk {
    pub batch: Batch,
    pub bad_rows: Vec<BadRow>,
    /// Where the rows come from, for messages.
    pub origin: String,
    /// Where the chunk sits, as a partly delivered chunk records it.
    pub at: ChunkPosition,
    /// What tells these rows apart from others at the same position (a
    /// digest of the rows; empty where the position says it all, as in an
    /// append-only file).
    pub rows_key: String,
    /// The progress to commit once the chunk's output is delivered.
    pub next: Progress,
    /// Bytes of the table not read yet (local tables).
    pub pending_bytes: Option<u64>,
}

/// A chunk's place in its source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkPosition {
    /// The chunk's end in a table file, or its window's end in ticks.
    pub end_offset: u64,
    /// ADX: its window's start in ticks.
    pub start_offset: Option<u64>,
    /// ADX: the chunks of the window before it, and their chained digest.
    pub chunks: u32,
    pub chunks_digest: String,
}

impl ChunkPosition {
    /// Whether `partial` records this chunk.
    pub fn is(&self, partial: &PartialChunk) -> bool {
        self.end_offset == partial.end_offset
            && self.start_offset == partial.start_offset
            && self.chunks == partial.chunks
            && self.chunks_digest == partial.chunks_digest
    }

    /// This chunk partly delivered: `requests` of the output `output_key`.
    pub fn partial(&self, requests: usize, output_key: String) -> PartialChunk {
        PartialChunk {
            end_offset: self.end_offset,
            start_offset: self.start_offset,
            chunks: self.chunks,
            chunks_digest: self.chunks_digest.clone(),
            requests,
            output_key,
        }
    }
}

/// Why a source could not yield its next chunk.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {table}: {source}")]
    Input {
        table: String,
        #[source]
        source: InputError,
    },
    /// Every ADX error names the exporter, the rule, the database and the
    /// request id.
    #[error("MetricsExporter {metrics_exporter}, rule {rule}: {source}")]
    Kusto {
        metrics_exporter: String,
        rule: String,
        #[source]
        source: Box<KustoError>,
    },
    /// The table or the query result lacks what the transform needs.
    #[error("{origin}: {message}")]
    Columns { origin: String, message: String },
    #[error("internal: {0}")]
    Internal(String),
}

impl SourceError {
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Input { .. } => "source",
            SourceError::Kusto { source, .. } => source.reason(),
            SourceError::Columns { .. } => "columns",
            SourceError::Internal(_) => "internal",
        }
    }
}

impl Classify for SourceError {
    fn retry_class(&self) -> RetryClass {
        match self {
            SourceError::Input { source, .. } => source.retry_class(),
            SourceError::Kusto { source, .. } => source.retry_class(),
            // The table may be fixed (a column added) without a restart.
            SourceError::Columns { .. } | SourceError::Internal(_) => RetryClass::Retryable,
        }
    }
}

/// Where a job's rows come from.
pub enum Source {
    Local(Box<LocalSource>),
    Kusto(Box<KustoSource>),
}

impl Source {
    /// The next chunk, or `None` when the source is caught up for this run.
    pub async fn next(&mut self) -> Result<Option<Chunk>, SourceError> {
        match self {
            Source::Local(l) => l.next().await,
            Source::Kusto(k) => k.next().await,
        }
    }
}

/// A local table file read forward from the job's cursor.
pub struct LocalSource {
    table: String,
    state: LocalState,
}

struct Unopened {
    tables: PathBuf,
    database: String,
    name: String,
    from: Progress,
    max_rows: usize,
    context: BatchContext,
}

enum LocalState {
    /// Opened on the first read (a blocking step).
    Closed(Box<Unopened>),
    Open(Box<LocalTable>),
    /// Taken by a read in progress, or failed.
    Busy,
}

impl LocalSource {
    pub fn new(
        tables: PathBuf,
        database: &str,
        name: &str,
        from: Progress,
        max_rows: usize,
        context: BatchContext,
    ) -> LocalSource {
        LocalSource {
            table: format!("{database}.{name}"),
            state: LocalState::Closed(Box::new(Unopened {
                tables,
                database: database.to_string(),
                name: name.to_string(),
                from,
                max_rows,
                context,
            })),
        }
    }

    async fn next(&mut self) -> Result<Option<Chunk>, SourceError> {
        let state = std::mem::replace(&mut self.state, LocalState::Busy);
        let table_name = self.table.clone();
        let (state, result) = tokio::task::spawn_blocking(move || {
            let mut table = match state {
                LocalState::Open(t) => t,
                LocalState::Closed(u) => match open(
                    &u.tables,
                    &u.database,
                    &u.name,
                    &u.from,
                    u.max_rows,
                    u.context,
                ) {
                    Ok(t) => Box::new(t),
                    Err(e) => return (LocalState::Busy, Err(e)),
                },
                LocalState::Busy => {
                    return (
                        LocalState::Busy,
                        Err(InputError::format(&table_name, "read after a failure")),
                    );
                }
            };
            let chunk = table.next_chunk();
            (LocalState::Open(table), chunk)
        })
        .await
        .map_err(|e| SourceError::Internal(e.to_string()))?;
        self.state = state;
        let chunk = result.map_err(|source| SourceError::Input {
            table: self.table.clone(),
            source,
        })?;
        let origin = match &self.state {
            LocalState::Open(t) => t.origin().to_string(),
            _ => self.table.clone(),
        };
        Ok(chunk.map(|c| Chunk {
            batch: c.batch,
            bad_rows: c.bad_rows,
            origin,
            at: ChunkPosition {
                end_offset: c.end,
                ..ChunkPosition::default()
            },
            // The file is append-only: offsets alone tell a chunk apart.
            rows_key: String::new(),
            next: Progress::at(Cursor::File(c.next)),
            pending_bytes: Some(c.pending_bytes),
        }))
    }
}

fn open(
    tables: &std::path::Path,
    database: &str,
    name: &str,
    from: &Progress,
    max_rows: usize,
    context: BatchContext,
) -> Result<LocalTable, InputError> {
    let (path, format): (PathBuf, InputFormat) = table_path(tables, database, name)?;
    let stop_at = from
        .partial
        .as_ref()
        .filter(|p| p.start_offset.is_none())
        .map(|p| p.end_offset);
    LocalTable::open(&path, format, from.file(), stop_at, max_rows, context)
}
