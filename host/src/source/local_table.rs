//! Local tables: `<tables>/<Database>/<Table>.csv` (typed header) or
//! `.jsonl`, append-only. Progress is the byte offset of the last complete
//! row read, so rows appended later are read once, whatever their
//! timestamps. A partly written last line waits for the next read. A file
//! that shrank or whose beginning changed is read again from the start.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::batch::BatchBuilder;
use super::csv_table;
use super::error::InputError;
use super::input::{InputFormat, read_bytes};
use crate::state::Progress;
use crate::wit::{Batch, BatchContext};

/// How many leading bytes identify a file (header and first rows).
const FINGERPRINT_BYTES: usize = 1024;
/// Bytes read from a table per chunk at most, so a long backlog is read once
/// in pieces rather than whole for every chunk.
const MAX_READ_BYTES: u64 = 64 << 20;

/// A row that could not be read; it is skipped, counted and reported.
#[derive(Debug, Clone)]
pub struct BadRow {
    pub row: u64,
    pub message: String,
}

/// One read: the rows, where to continue, and what was skipped.
pub struct Chunk {
    pub batch: Batch,
    pub next: Progress,
    pub bad_rows: Vec<BadRow>,
    /// True when the file was truncated or rewritten and read from the start.
    pub restarted: bool,
    /// True when rows may remain after this chunk (a row or byte limit was hit).
    pub more: bool,
    /// Bytes of the file not yet read after this chunk.
    pub pending_bytes: u64,
}

/// Whether a database or table name can name a folder or file right below
/// its parent: anything else (`..`, `a/b`, an absolute path) would read
/// outside the folder that the tenancy policy allows by name.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not names");
    }
    if name.contains(['/', '\\', '\0']) {
        return Err("it holds a path separator");
    }
    Ok(())
}

/// The file of a table, whichever format it has.
pub fn table_path(
    tables: &Path,
    database: &str,
    table: &str,
) -> Result<(PathBuf, InputFormat), InputError> {
    for name in [database, table] {
        if let Err(why) = check_name(name) {
            return Err(InputError::Io {
                path: tables.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "table {database}.{table}: `{name}` is not a folder or file name: {why}"
                    ),
                ),
            });
        }
    }
    let dir = tables.join(database);
    for (ext, format) in [("csv", InputFormat::Csv), ("jsonl", InputFormat::JsonLines)] {
        let path = dir.join(format!("{table}.{ext}"));
        if path.exists() {
            return Ok((path, format));
        }
    }
    Err(InputError::Io {
        path: dir.join(format!("{table}.csv")).display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "table {database}.{table} not found (looked for {table}.csv and {table}.jsonl)"
            ),
        ),
    })
}

fn fingerprint(prefix: &[u8]) -> String {
    hex::encode(Sha256::digest(
        &prefix[..prefix.len().min(FINGERPRINT_BYTES)],
    ))
}

/// Reads up to `max_rows` complete rows after `from`, and not past
/// `from.partial.end_offset` when a chunk was partly delivered (so that the
/// same chunk, and so the same requests, come back).
pub fn read_chunk(
    path: &Path,
    format: InputFormat,
    from: Option<&Progress>,
    max_rows: usize,
    context: BatchContext,
) -> Result<Chunk, InputError> {
    let origin = path.display().to_string();
    let io = |source| InputError::Io {
        path: origin.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut head = vec![0u8; FINGERPRINT_BYTES.min(len as usize)];
    file.read_exact(&mut head).map_err(io)?;
    let mut start = from.cloned().unwrap_or_default();
    let mut restarted = false;
    if start.offset > 0 {
        let same_file = start.offset <= len
            && start.fingerprint == fingerprint(&head[..head.len().min(start.offset as usize)]);
        if !same_file {
            tracing::warn!(table = %origin, offset = start.offset, size = len, "table was truncated or rewritten; reading it again from the start");
            start = Progress::default();
            restarted = true;
        }
    }
    let header = match format {
        InputFormat::Csv => Some(header_line(&head, &origin)?),
        _ => None,
    };
    let begin = match &header {
        Some(h) => start.offset.max(h.len() as u64),
        None => start.offset,
    };
    file.seek(SeekFrom::Start(begin)).map_err(io)?;
    let to_read = len.saturating_sub(begin).min(MAX_READ_BYTES);
    let mut rest = Vec::with_capacity(to_read as usize);
    (&mut file)
        .take(to_read)
        .read_to_end(&mut rest)
        .map_err(io)?;
    let read_all = begin + rest.len() as u64 >= len;
    // Only whole lines: a writer may be half-way through the last one.
    let all_complete = rest.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if all_complete == 0 && !read_all {
        return Err(InputError::format(
            &origin,
            format!("the row at byte {begin} is longer than {MAX_READ_BYTES} bytes"),
        ));
    }
    let mut complete = all_complete;
    if let Some(end) = start.partial.as_ref().map(|p| p.end_offset)
        && end > begin
    {
        complete = complete.min((end - begin) as usize);
    }
    let rest = &rest[..complete];

    let (batch, consumed, rows, bad_rows) = match (&header, format) {
        (Some(h), _) => read_csv_rows(&origin, h, rest, start.rows, max_rows, context)?,
        (None, _) => read_jsonl_rows(&origin, rest, start.rows, max_rows, format, context)?,
    };
    let offset = begin + consumed as u64;
    let whole_file_prefix = {
        let upto = (offset as usize).min(FINGERPRINT_BYTES);
        if upto <= head.len() {
            fingerprint(&head[..upto])
        } else {
            fingerprint(&head)
        }
    };
    Ok(Chunk {
        batch,
        next: Progress {
            offset,
            rows: start.rows + rows,
            fingerprint: whole_file_prefix,
            ..Progress::default()
        },
        bad_rows,
        restarted,
        more: consumed < all_complete || !read_all,
        pending_bytes: len.saturating_sub(offset),
    })
}

/// The header line including its newline.
fn header_line<'a>(head: &'a [u8], origin: &str) -> Result<&'a [u8], InputError> {
    match head.iter().position(|b| *b == b'\n') {
        Some(i) => Ok(&head[..=i]),
        None => Err(InputError::format(
            origin,
            "no complete header line (expected `Name:type,...` in the first 1 KiB)",
        )),
    }
}

type Rows = (Batch, usize, u64, Vec<BadRow>);

fn read_csv_rows(
    origin: &str,
    header: &[u8],
    data: &[u8],
    rows_before: u64,
    max_rows: usize,
    context: BatchContext,
) -> Result<Rows, InputError> {
    let headers = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(header)
        .records()
        .next()
        .transpose()
        .map_err(|e| InputError::format(origin, format!("header: {e}")))?
        .unwrap_or_default();
    let mut builder: BatchBuilder = csv_table::header_builder(origin, &headers)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut record = csv::StringRecord::new();
    let mut consumed = 0usize;
    let mut rows = 0u64;
    let mut bad_rows = Vec::new();
    while (rows as usize) < max_rows {
        let read = reader.read_record(&mut record);
        let end = reader.position().byte() as usize;
        match read {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                rows += 1;
                consumed = end;
                bad_rows.push(BadRow {
                    row: rows_before + rows,
                    message: e.to_string(),
                });
                continue;
            }
        }
        rows += 1;
        consumed = end;
        let row = rows_before + rows;
        if record.len() != builder.columns.len() {
            bad_rows.push(BadRow {
                row,
                message: format!(
                    "{} fields for {} columns",
                    record.len(),
                    builder.columns.len()
                ),
            });
            continue;
        }
        if let Err(e) = csv_table::push_record(origin, &mut builder, &record, row as usize) {
            bad_rows.push(BadRow {
                row,
                message: e.to_string(),
            });
        }
    }
    Ok((builder.finish(context), consumed, rows, bad_rows))
}

fn read_jsonl_rows(
    origin: &str,
    data: &[u8],
    rows_before: u64,
    max_rows: usize,
    format: InputFormat,
    context: BatchContext,
) -> Result<Rows, InputError> {
    let mut consumed = 0usize;
    let mut rows = 0u64;
    let mut bad_rows = Vec::new();
    let mut good = Vec::new();
    for line in data.split_inclusive(|b| *b == b'\n') {
        if rows as usize >= max_rows {
            break;
        }
        consumed += line.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        rows += 1;
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => good.extend_from_slice(line),
            Ok(_) => bad_rows.push(BadRow {
                row: rows_before + rows,
                message: "not a JSON object".to_string(),
            }),
            Err(e) => bad_rows.push(BadRow {
                row: rows_before + rows,
                message: e.to_string(),
            }),
        }
    }
    // Types are inferred over the rows of this chunk.
    let batch = read_bytes(origin, &good, format, context)?;
    Ok((batch, consumed, rows, bad_rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::batch::sample_context;

    fn read(path: &Path, from: Option<&Progress>, max: usize) -> Chunk {
        read_chunk(path, InputFormat::Csv, from, max, sample_context("t")).unwrap()
    }

    #[test]
    fn appended_rows_and_only_those_are_read_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "v:long,t:datetime\n1,2025-01-01\n2,2025-01-01\n3,2025-",
        )
        .unwrap();
        let first = read(&path, None, 100);
        assert_eq!(first.batch.row_count, 2, "the half-written row waits");
        assert_eq!(first.next.rows, 2);
        let again = read(&path, Some(&first.next), 100);
        assert_eq!(again.batch.row_count, 0);
        std::fs::write(
            &path,
            "v:long,t:datetime\n1,2025-01-01\n2,2025-01-01\n3,2025-01-02\n4,bad\n",
        )
        .unwrap();
        let next = read(&path, Some(&first.next), 100);
        assert_eq!(next.batch.row_count, 1);
        assert_eq!(next.bad_rows.len(), 1);
        assert_eq!(next.bad_rows[0].row, 4, "rows are numbered across reads");
        assert!(!next.restarted);
    }

    #[test]
    fn chunks_respect_the_row_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "v:long\n1\n2\n3\n4\n5\n").unwrap();
        let a = read(&path, None, 2);
        assert_eq!((a.batch.row_count, a.more), (2, true));
        let b = read(&path, Some(&a.next), 2);
        let c = read(&path, Some(&b.next), 2);
        assert_eq!((c.batch.row_count, c.more), (1, false));
    }

    #[test]
    fn a_rewritten_or_truncated_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "v:long\n1\n2\n").unwrap();
        let a = read(&path, None, 100);
        std::fs::write(&path, "v:long\n9\n").unwrap();
        let b = read(&path, Some(&a.next), 100);
        assert!(b.restarted);
        assert_eq!(b.batch.row_count, 1);
        std::fs::write(&path, "v:long\n7\n8\n").unwrap();
        let c = read(&path, Some(&b.next), 100);
        assert!(c.restarted, "same length prefix, different content");
    }
}
