//! The first two stages of a job's pipeline, each its own task: the source
//! reading chunks, and the guest transforming them (on blocking threads),
//! joined by channels that hold one chunk, so a slow exporter holds back the
//! guest and the reader instead of letting chunks pile up. The job loop
//! (`job.rs`) is the third stage: it delivers and commits in order.
//!
//! A chunk on which the guest hits a limit (memory, output, deadline,
//! sandbox) is cut in halves and each half transformed again, down to one
//! row; a single row that still fails is left out and reported, so one
//! poison row never stalls an exporter. The halving is bounded
//! ([`MAX_SPLIT_CALLS`], [`MAX_SPLIT_TIME`]): a guest that fails on every
//! row fails the chunk instead of being called for each row.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::job::JobError;
use crate::source::batch::slice;
use crate::source::chunk::{Chunk, ChunkPosition, Source};
use crate::source::local_table::BadRow;
use crate::state::Progress;
use crate::transform::{Guest, TransformError};
use crate::wit::{Batch, Output};

/// Guest calls one chunk may take while its poison rows are searched for.
pub const MAX_SPLIT_CALLS: usize = 128;
/// Time one chunk may take while its poison rows are searched for.
pub const MAX_SPLIT_TIME: Duration = Duration::from_secs(60);

/// A chunk after the guest: its outputs, with what the job commits after
/// delivering them.
pub struct Transformed {
    pub rows: u32,
    pub origin: String,
    pub bad_rows: Vec<BadRow>,
    /// In row order; more than one when the chunk was cut for a limit.
    pub outputs: Vec<Output>,
    /// Rows (0-based within the chunk) left out because the guest hits a
    /// limit on each alone, with why.
    pub poisoned: Vec<(usize, String)>,
    /// How the chunk was cut (empty when it was not): part of the output key.
    pub split: String,
    pub at: ChunkPosition,
    pub rows_key: String,
    pub next: Progress,
    pub pending_bytes: Option<u64>,
}

/// The transformed chunks of one pass, in order.
pub struct Chunks {
    rx: mpsc::Receiver<Result<Transformed, JobError>>,
    tasks: [JoinHandle<()>; 2],
}

impl Chunks {
    pub async fn next(&mut self) -> Option<Result<Transformed, JobError>> {
        self.rx.recv().await
    }
}

impl Drop for Chunks {
    /// A job that stops (a failure, a cancelled run) stops its stages.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the reader and the transformer of one pass.
pub fn start(mut source: Source, guest: Guest, config: String) -> Chunks {
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Result<Chunk, JobError>>(1);
    let (out_tx, out_rx) = mpsc::channel::<Result<Transformed, JobError>>(1);
    let reader = tokio::spawn(async move {
        loop {
            let next = source.next().await.map_err(JobError::from);
            let stop = !matches!(next, Ok(Some(_)));
            let item = match next {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if chunk_tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let transformer = tokio::spawn(async move {
        while let Some(item) = chunk_rx.recv().await {
            let result = match item {
                Ok(chunk) => {
                    let (guest, config) = (guest.clone(), config.clone());
                    tokio::task::spawn_blocking(move || transform_chunk(&guest, &config, chunk))
                        .await
                        .unwrap_or_else(|e| Err(JobError::Internal(e.to_string())))
                }
                Err(e) => Err(e),
            };
            let failed = result.is_err();
            if out_tx.send(result).await.is_err() || failed {
                break;
            }
        }
    });
    Chunks {
        rx: out_rx,
        tasks: [reader, transformer],
    }
}

/// The guest limits a smaller batch may stay within.
fn is_limit(e: &TransformError) -> bool {
    matches!(
        e,
        TransformError::OutOfMemory { .. }
            | TransformError::OutputTooLarge { .. }
            | TransformError::Timeout { .. }
            | TransformError::SandboxLimit { .. }
    )
}

fn transform_chunk(guest: &Guest, config: &str, chunk: Chunk) -> Result<Transformed, JobError> {
    let rows = chunk.batch.row_count;
    let mut outputs = Vec::new();
    let mut poisoned = Vec::new();
    let mut parts = Vec::new();
    if rows > 0 {
        let mut budget = Budget {
            calls: MAX_SPLIT_CALLS,
            until: None,
        };
        transform_parts(
            guest,
            config,
            chunk.batch,
            0,
            &mut budget,
            &mut outputs,
            &mut poisoned,
            &mut parts,
        )?;
    }
    // Cut in parts only after a limit; the common case keeps the key of a
    // chunk transformed whole.
    let split = if parts.len() <= 1 && poisoned.is_empty() {
        String::new()
    } else {
        let mut s: Vec<String> = parts.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        s.extend(poisoned.iter().map(|(r, _)| format!("x{r}")));
        s.join(",")
    };
    Ok(Transformed {
        rows,
        origin: chunk.origin,
        bad_rows: chunk.bad_rows,
        outputs,
        poisoned,
        split,
        at: chunk.at,
        rows_key: chunk.rows_key,
        next: chunk.next,
        pending_bytes: chunk.pending_bytes,
    })
}

struct Budget {
    calls: usize,
    /// Set when the first limit was hit.
    until: Option<Instant>,
}

/// Transforms `batch` (rows `offset..` of the chunk); on a limit, its halves.
#[allow(clippy::too_many_arguments)]
fn transform_parts(
    guest: &Guest,
    config: &str,
    batch: Batch,
    offset: usize,
    budget: &mut Budget,
    outputs: &mut Vec<Output>,
    poisoned: &mut Vec<(usize, String)>,
    parts: &mut Vec<(usize, usize)>,
) -> Result<(), TransformError> {
    let rows = batch.row_count as usize;
    match guest.transform(config, &batch) {
        Ok(output) => {
            outputs.push(output);
            parts.push((offset, offset + rows));
            Ok(())
        }
        Err(e) if is_limit(&e) => {
            if rows <= 1 {
                poisoned.push((offset, e.to_string()));
                return Ok(());
            }
            let until = *budget
                .until
                .get_or_insert_with(|| Instant::now() + MAX_SPLIT_TIME);
            if budget.calls < 2 || Instant::now() >= until {
                tracing::warn!(
                    guest = guest.name(),
                    rows,
                    "the guest keeps hitting its limits on parts of the chunk; giving up on it"
                );
                return Err(e);
            }
            budget.calls -= 2;
            let mid = rows / 2;
            let (first, second) = (slice(&batch, 0..mid), slice(&batch, mid..rows));
            drop(batch);
            transform_parts(
                guest, config, first, offset, budget, outputs, poisoned, parts,
            )?;
            transform_parts(
                guest,
                config,
                second,
                offset + mid,
                budget,
                outputs,
                poisoned,
                parts,
            )
        }
        Err(e) => Err(e),
    }
}
