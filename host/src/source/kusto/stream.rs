//! A window's rows as they arrive, in chunks: the answer to a query is
//! parsed while it streams in and handed on `max_rows` rows at a time, so a
//! window of any size is read in bounded memory and never cut.
//!
//! Three stages, joined by bounded channels, so a slow consumer holds back
//! the parser, the parser holds back the HTTP body, and the body holds back
//! ADX (through TCP) instead of anything piling up:
//!
//! ```text
//! HTTP body ──(pieces, BODY_PIECES_AHEAD)──► parser (spawn_blocking) ──(chunks, CHUNKS_AHEAD)──► next_chunk()
//! ```
//!
//! Memory held: up to [`BODY_PIECES_AHEAD`] pieces of the body as hyper
//! hands them out (tens of KB each), the parser's read buffer, the chunk
//! being built, [`CHUNKS_AHEAD`] finished chunks, and the one the consumer
//! holds.
//!
//! Each chunk carries a digest of its rows ([`chunk_digest`]): the window
//! queries ask ADX for a stable order (`kql::stable_order`), so reading the
//! same window again gives the same chunks, and a partly delivered window
//! can be resumed by skipping the chunks whose digests were delivered.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::{BodyStream, KustoClient, Query, response_error};
use super::error::{KustoError, KustoErrorKind};
use super::kql;
use crate::source::InputError;
use crate::source::kusto_v2::{Parsed, parse_v2_chunks};
use crate::source::local_table::BadRow;
use crate::wit::{Batch, BatchContext, Column, ColumnValues};

/// Finished chunks waiting for the consumer.
pub const CHUNKS_AHEAD: usize = 2;
/// Pieces of the HTTP body waiting for the parser.
pub const BODY_PIECES_AHEAD: usize = 8;

/// At most `max_rows` rows of a window's result, in the order ADX sent
/// them.
#[derive(Debug)]
pub struct RowChunk {
    /// Its place in the stream, from 0.
    pub index: usize,
    pub batch: Batch,
    /// Rows of this chunk's stretch of the response that did not fit their
    /// columns: left out of `batch` (their row numbers count from the start
    /// of the result). `batch.row_count + bad_rows.len()` is `max_rows` for
    /// every chunk but the last.
    pub bad_rows: Vec<BadRow>,
    /// [`chunk_digest`] of `batch`.
    pub digest: String,
}

enum Event {
    Chunk(RowChunk),
    /// The result was read to its end and reported no error.
    End,
    Failed(KustoError),
}

/// One query's result, chunk by chunk. Dropping it stops the read: the
/// parser stops at its next chunk and the connection is closed.
pub struct WindowStream {
    database: String,
    request_id: String,
    origin: String,
    chunks: mpsc::Receiver<Event>,
    pump: JoinHandle<()>,
    parser: Option<JoinHandle<()>>,
    received: Arc<AtomicU64>,
    done: bool,
}

impl WindowStream {
    /// Sends `query` ([`KustoClient::query_stream`]: retried until ADX
    /// answers 200, never truncated) and starts reading its answer.
    /// `context` goes with every chunk's batch; its window bounds, when
    /// set, name the window in errors. `max_rows` of 0 counts as 1.
    pub async fn open(
        client: &KustoClient,
        query: &Query,
        context: BatchContext,
        max_rows: usize,
    ) -> Result<WindowStream, KustoError> {
        let body = client.query_stream(query).await?;
        let request_id = body.request_id.clone();
        let origin = origin(&query.database, &request_id, &context);
        let received = Arc::new(AtomicU64::new(0));
        let (piece_tx, piece_rx) = mpsc::channel(BODY_PIECES_AHEAD);
        let pump = tokio::spawn(pump(body, piece_tx, received.clone()));
        let (chunk_tx, chunks) = mpsc::channel(CHUNKS_AHEAD);
        let job = ParseJob {
            origin: origin.clone(),
            database: query.database.clone(),
            request_id: request_id.clone(),
            context,
            max_rows,
        };
        let parser = tokio::task::spawn_blocking(move || job.run(piece_rx, chunk_tx));
        tracing::debug!(
            database = %query.database, request_id = %request_id, max_rows,
            "reading a window as a stream"
        );
        Ok(WindowStream {
            database: query.database.clone(),
            request_id,
            origin,
            chunks,
            pump,
            parser: Some(parser),
            received,
            done: false,
        })
    }

    /// The next chunk of at most `max_rows` rows, in the order Kusto sent
    /// them; `None` at the end of the result, once all of it was read and
    /// reported no error. An error (the answer broke off: retryable; the
    /// query failed at its end, a limit was hit, the response is not v2)
    /// fails the whole window, even after earlier chunks were handed out.
    /// After `None` or an error, `None`. Cancel-safe.
    pub async fn next_chunk(&mut self) -> Result<Option<RowChunk>, KustoError> {
        if self.done {
            return Ok(None);
        }
        let event = self.chunks.recv().await;
        match event {
            Some(Event::Chunk(chunk)) => Ok(Some(chunk)),
            Some(Event::End) => {
                self.done = true;
                Ok(None)
            }
            Some(Event::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                // The parser went away without saying how it ended.
                self.done = true;
                let why = match self.parser.take() {
                    Some(parser) => match parser.await {
                        Err(e) if e.is_panic() => "it panicked".to_string(),
                        Err(e) => e.to_string(),
                        Ok(()) => "it stopped early".to_string(),
                    },
                    None => "it is gone".to_string(),
                };
                let error = InputError::format(
                    &self.origin,
                    format!("reading the response stopped without an end: {why}"),
                );
                Err(KustoError::new(
                    &self.database,
                    &self.request_id,
                    KustoErrorKind::Response(error),
                ))
            }
        }
    }

    /// The client request id of the query, as ADX logs it.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Bytes of the answer received so far.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for WindowStream {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// `TelemetryDB request KM.Window;… (2025-06-25T10:00:00.0000000Z .. …)`.
fn origin(database: &str, request_id: &str, context: &BatchContext) -> String {
    match (context.window_start, context.window_end) {
        (Some(start), Some(end)) => format!(
            "{database} request {request_id} ({} .. {})",
            kql::format_ticks(start / 100),
            kql::format_ticks(end / 100)
        ),
        _ => format!("{database} request {request_id}"),
    }
}

/// Moves the body, piece by piece, into the parser's channel.
async fn pump(
    mut body: BodyStream,
    pieces: mpsc::Sender<Result<Bytes, KustoError>>,
    received: Arc<AtomicU64>,
) {
    loop {
        let next = body.next().await;
        received.store(body.received(), Ordering::Relaxed);
        let piece = match next {
            Ok(Some(piece)) => Ok(piece),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = piece.is_err();
        if pieces.send(piece).await.is_err() || failed {
            return;
        }
    }
}

struct ParseJob {
    origin: String,
    database: String,
    request_id: String,
    context: BatchContext,
    max_rows: usize,
}

impl ParseJob {
    /// On a blocking thread: the body parsed into chunks.
    fn run(self, pieces: mpsc::Receiver<Result<Bytes, KustoError>>, chunks: mpsc::Sender<Event>) {
        let mut reader = PieceReader {
            pieces,
            current: Bytes::new(),
            failure: None,
        };
        let mut index = 0;
        let mut sink = |batch: Batch, bad_rows: Vec<BadRow>| {
            let digest = chunk_digest(&batch);
            let chunk = RowChunk {
                index,
                batch,
                bad_rows,
                digest,
            };
            index += 1;
            chunks.blocking_send(Event::Chunk(chunk)).is_ok()
        };
        let parsed = parse_v2_chunks(
            &self.origin,
            &mut reader,
            &self.context,
            self.max_rows,
            &mut sink,
        );
        let event = match parsed {
            Ok(Parsed::Complete) => Event::End,
            // Nobody listens any more.
            Ok(Parsed::Stopped) => return,
            // A broken connection shows up as a parse error; what broke is
            // the error, and retrying may well help.
            Err(e) => Event::Failed(
                reader
                    .failure
                    .take()
                    .unwrap_or_else(|| response_error(&self.database, &self.request_id, e)),
            ),
        };
        let _ = chunks.blocking_send(event);
    }
}

/// The body's pieces as a blocking [`Read`].
struct PieceReader {
    pieces: mpsc::Receiver<Result<Bytes, KustoError>>,
    current: Bytes,
    /// What broke the body, kept for the caller: the parser sees only an
    /// I/O error.
    failure: Option<KustoError>,
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if let Some(e) = &self.failure {
                return Err(io::Error::other(e.to_string()));
            }
            match self.pieces.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => {
                    let message = e.to_string();
                    self.failure = Some(e);
                    return Err(io::Error::other(message));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// SHA-256 of a chunk's rows in their order, column by column (name,
/// type, nulls, values), the first 16 bytes in hex. Values are hashed by
/// what they are, not how they are stored: a string column gives the same
/// digest as a dictionary or as plain text. No sort: the order is ADX's
/// stable one, and it is part of what is compared (the guest sees the rows
/// in that order, and its requests follow it).
pub fn chunk_digest(batch: &Batch) -> String {
    let mut h = Sha256::new();
    h.update(u64::from(batch.row_count).to_le_bytes());
    for c in &batch.columns {
        h.update((c.name.len() as u64).to_le_bytes());
        h.update(c.name.as_bytes());
        h.update(c.kusto_type.name().as_bytes());
        h.update((c.validity.len() as u64).to_le_bytes());
        h.update(&c.validity);
        hash_values(&mut h, c);
    }
    hex::encode(&h.finalize()[..16])
}

fn hash_values(h: &mut Sha256, c: &Column) {
    let mut words = Words::new(h);
    match &c.values {
        ColumnValues::Booleans(v) => words.h.update(v),
        ColumnValues::Longs(v) | ColumnValues::Ticks(v) => {
            v.iter().for_each(|x| words.push(&x.to_le_bytes()));
        }
        ColumnValues::Reals(v) => v.iter().for_each(|x| words.push(&x.to_le_bytes())),
        ColumnValues::Text(t) => {
            let n = t.offsets.len().saturating_sub(1);
            (0..n).for_each(|r| words.push(&(t.get(r).len() as u32).to_le_bytes()));
            words.flush();
            (0..n).for_each(|r| words.h.update(t.get(r).as_bytes()));
        }
        ColumnValues::Dictionary(d) => {
            let n = d.indices.len();
            (0..n).for_each(|r| words.push(&(d.get(r).len() as u32).to_le_bytes()));
            words.flush();
            (0..n).for_each(|r| words.h.update(d.get(r).as_bytes()));
        }
    }
    words.flush();
}

/// Small values gathered into blocks before they are hashed: one
/// `update` per 8-byte value costs more than the hashing.
struct Words<'h> {
    h: &'h mut Sha256,
    buf: [u8; 4096],
    len: usize,
}

impl<'h> Words<'h> {
    fn new(h: &'h mut Sha256) -> Self {
        Words {
            h,
            buf: [0; 4096],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.flush();
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        self.h.update(&self.buf[..self.len]);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::batch::{BatchBuilder, ColumnBuilder, sample_context};
    use crate::wit::{KustoType, TextArena, TextDictionary};

    fn strings(values: ColumnValues, names: &[&str]) -> Batch {
        let mut n = ColumnBuilder::new("n", KustoType::Long);
        for i in 0..names.len() {
            if i % 2 == 0 {
                n.push_long(i as i64);
            } else {
                n.push_null();
            }
        }
        let mut batch = BatchBuilder::new(vec![n]).finish(sample_context("t"));
        batch.columns.insert(
            0,
            Column {
                name: "s".into(),
                kusto_type: KustoType::String,
                validity: Vec::new(),
                values,
            },
        );
        batch
    }

    fn plain(names: &[&str]) -> Batch {
        let mut offsets = vec![0u32];
        let mut data = String::new();
        for n in names {
            data.push_str(n);
            offsets.push(data.len() as u32);
        }
        strings(ColumnValues::Text(TextArena { data, offsets }), names)
    }

    fn dictionary(names: &[&str]) -> Batch {
        let mut distinct: Vec<&str> = Vec::new();
        let mut indices = Vec::new();
        for n in names {
            let i = distinct.iter().position(|d| d == n).unwrap_or_else(|| {
                distinct.push(n);
                distinct.len() - 1
            });
            indices.push(i as u32);
        }
        let ColumnValues::Text(values) = plain(&distinct).columns.remove(0).values else {
            unreachable!()
        };
        strings(
            ColumnValues::Dictionary(TextDictionary { values, indices }),
            names,
        )
    }

    #[test]
    fn digests_follow_the_rows_and_their_order_not_the_encoding() {
        let a = dictionary(&["x", "y", "x"]);
        assert_eq!(
            chunk_digest(&a),
            chunk_digest(&dictionary(&["x", "y", "x"]))
        );
        assert_eq!(chunk_digest(&a), chunk_digest(&plain(&["x", "y", "x"])));
        assert_ne!(
            chunk_digest(&a),
            chunk_digest(&dictionary(&["x", "x", "y"]))
        );
        assert_ne!(
            chunk_digest(&a),
            chunk_digest(&dictionary(&["x", "y", "z"]))
        );
        // Value boundaries count: "ab","c" is not "a","bc".
        assert_ne!(
            chunk_digest(&plain(&["ab", "c"])),
            chunk_digest(&plain(&["a", "bc"]))
        );
        // So do nulls.
        let mut b = plain(&["x", "y", "x"]);
        b.columns[1].validity = vec![0b111];
        assert_ne!(chunk_digest(&a), chunk_digest(&b));
    }

    #[test]
    fn a_broken_body_is_the_reader_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"[1,"))).unwrap();
        tx.try_send(Err(KustoError::new(
            "db",
            "r1",
            KustoErrorKind::Network("reset".into()),
        )))
        .unwrap();
        drop(tx);
        let mut reader = PieceReader {
            pieces: rx,
            current: Bytes::new(),
            failure: None,
        };
        let mut text = String::new();
        let e = reader.read_to_string(&mut text).unwrap_err();
        assert_eq!(text, "[1,");
        assert!(e.to_string().contains("reset"), "{e}");
        assert!(matches!(
            reader.failure.map(|f| f.kind),
            Some(KustoErrorKind::Network(_))
        ));
    }
}
