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
use crate::state::FilePosition;
use crate::wit::{Batch, BatchContext};

/// How many leading bytes identify a file (header and first rows).
const FINGERPRINT_BYTES: usize = 1024;
/// Bytes read from the file at a time.
const READ_BLOCK: usize = 4 << 20;
/// A longer row is refused: a file without newlines is not a table.
const MAX_ROW_BYTES: usize = 64 << 20;

/// A row that could not be read; it is skipped, counted and reported.
#[derive(Debug, Clone)]
pub struct BadRow {
    pub row: u64,
    pub message: String,
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

/// One chunk of a table: at most `max_rows` rows, where the file stands
/// after them, and what was skipped.
pub struct FileChunk {
    pub batch: Batch,
    pub bad_rows: Vec<BadRow>,
    /// Where the chunk's rows start and end in the file.
    pub start: u64,
    pub end: u64,
    pub next: FilePosition,
    /// Bytes of complete rows not read yet after this chunk.
    pub pending_bytes: u64,
}

/// An open table, read forward chunk by chunk: each byte is read from the
/// file once (rows left over after a chunk wait in the buffer for the next
/// one), and a pass ends at the length the file had when it was opened, so
/// a table written to while it is read still gives a pass that ends.
pub struct LocalTable {
    origin: String,
    format: InputFormat,
    file: std::fs::File,
    /// The file's first bytes, for fingerprints.
    head: Vec<u8>,
    /// The CSV header's fields.
    header: Option<csv::StringRecord>,
    /// Unread bytes: `buf[start..]` begins at file offset `buf_offset + start`.
    buf: Vec<u8>,
    start: usize,
    buf_offset: u64,
    /// The file's length when the pass began: nothing past it is read.
    end_limit: u64,
    position: FilePosition,
    /// The first chunk ends exactly here (a chunk partly delivered before).
    stop_at: Option<u64>,
    max_rows: usize,
    context: BatchContext,
    /// True when the file was truncated or rewritten and is read from the
    /// start.
    pub restarted: bool,
}

impl LocalTable {
    /// Opens the table at `path` for a pass from `from`. `stop_at`: the end
    /// of a chunk that was partly delivered, which must come back whole.
    pub fn open(
        path: &Path,
        format: InputFormat,
        from: Option<&FilePosition>,
        stop_at: Option<u64>,
        max_rows: usize,
        context: BatchContext,
    ) -> Result<LocalTable, InputError> {
        let origin = path.display().to_string();
        let io = |source| InputError::Io {
            path: origin.clone(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = vec![0u8; FINGERPRINT_BYTES.min(len as usize)];
        file.read_exact(&mut head).map_err(io)?;
        let mut position = from.cloned().unwrap_or_default();
        let mut restarted = false;
        let mut stop_at = stop_at;
        if position.offset > 0 {
            let same_file = position.offset <= len
                && position.fingerprint
                    == fingerprint(&head[..head.len().min(position.offset as usize)]);
            if !same_file {
                tracing::warn!(table = %origin, offset = position.offset, size = len, "table was truncated or rewritten; reading it again from the start");
                position = FilePosition::default();
                restarted = true;
                stop_at = None;
            }
        }
        let header = match format {
            InputFormat::Csv => {
                let line = header_line(&head, &origin)?;
                position.offset = position.offset.max(line.len() as u64);
                let fields = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(line)
                    .records()
                    .next()
                    .transpose()
                    .map_err(|e| InputError::format(&origin, format!("header: {e}")))?
                    .unwrap_or_default();
                // Checked now, so a bad header fails the pass before any row.
                csv_table::header_builder(&origin, &fields)?;
                Some(fields)
            }
            _ => None,
        };
        file.seek(SeekFrom::Start(position.offset)).map_err(io)?;
        Ok(LocalTable {
            origin,
            format,
            file,
            head,
            header,
            buf: Vec::new(),
            start: 0,
            buf_offset: position.offset,
            end_limit: len,
            position,
            stop_at,
            max_rows: max_rows.max(1),
            context,
            restarted,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn position(&self) -> &FilePosition {
        &self.position
    }

    /// Reads more of the file into the buffer: up to [`READ_BLOCK`] bytes,
    /// not past the pass's end. False when nothing is left to read.
    fn fill(&mut self) -> Result<bool, InputError> {
        let read_to = self.buf_offset + self.buf.len() as u64;
        if read_to >= self.end_limit {
            return Ok(false);
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.buf_offset += self.start as u64;
            self.start = 0;
        }
        let want = (self.end_limit - read_to).min(READ_BLOCK as u64) as usize;
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let got =
            read_fully(&mut self.file, &mut self.buf[old..]).map_err(|source| InputError::Io {
                path: self.origin.clone(),
                source,
            })?;
        self.buf.truncate(old + got);
        Ok(got > 0)
    }

    /// The unread bytes that are complete rows (up to the last newline, and
    /// not past `stop_at`).
    fn complete(&self) -> &[u8] {
        let unread = &self.buf[self.start..];
        let mut end = unread
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if let Some(stop) = self.stop_at {
            let here = self.buf_offset + self.start as u64;
            end = end.min(stop.saturating_sub(here) as usize);
        }
        &unread[..end]
    }

    /// The next chunk, or `None` when the pass has read every complete row.
    pub fn next_chunk(&mut self) -> Result<Option<FileChunk>, InputError> {
        let chunk_start = self.buf_offset + self.start as u64;
        let mut rows = 0u64;
        let mut bad_rows = Vec::new();
        let mut csv_builder = match &self.header {
            Some(h) => Some(csv_table::header_builder(&self.origin, h)?),
            None => None,
        };
        let mut json_lines = Vec::new();
        loop {
            let room = self.max_rows - rows as usize;
            let data = self.complete();
            let (consumed, read) = match &mut csv_builder {
                Some(builder) => read_csv_rows(
                    &self.origin,
                    builder,
                    data,
                    self.position.rows + rows,
                    room,
                    &mut bad_rows,
                )?,
                None => read_jsonl_lines(
                    data,
                    self.position.rows + rows,
                    room,
                    &mut json_lines,
                    &mut bad_rows,
                ),
            };
            self.start += consumed;
            rows += read;
            let at = self.buf_offset + self.start as u64;
            if rows as usize >= self.max_rows || self.stop_at.is_some_and(|s| at >= s) {
                break;
            }
            if self.complete().is_empty() && self.buf.len() - self.start >= MAX_ROW_BYTES {
                return Err(InputError::format(
                    &self.origin,
                    format!("the row at byte {at} is longer than {MAX_ROW_BYTES} bytes"),
                ));
            }
            if !self.fill()? {
                break;
            }
        }
        let end = self.buf_offset + self.start as u64;
        if end == chunk_start && rows == 0 {
            return Ok(None);
        }
        if self.stop_at.is_some_and(|s| end >= s) {
            self.stop_at = None;
        }
        let batch = match csv_builder {
            Some(builder) => builder.finish(self.context.clone()),
            // Types are inferred over the rows of this chunk.
            None => read_bytes(&self.origin, &json_lines, self.format, self.context.clone())?,
        };
        self.position = FilePosition {
            offset: end,
            rows: self.position.rows + rows,
            fingerprint: fingerprint(&self.head[..self.head.len().min(end as usize)]),
        };
        Ok(Some(FileChunk {
            batch,
            bad_rows,
            start: chunk_start,
            end,
            next: self.position.clone(),
            pending_bytes: self.end_limit.saturating_sub(end),
        }))
    }
}

/// Reads until `buf` is full or the file ends.
fn read_fully(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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

/// Up to `max_rows` rows of `data` into `builder`: (bytes consumed, rows).
fn read_csv_rows(
    origin: &str,
    builder: &mut BatchBuilder,
    data: &[u8],
    rows_before: u64,
    max_rows: usize,
    bad_rows: &mut Vec<BadRow>,
) -> Result<(usize, u64), InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut record = csv::StringRecord::new();
    let mut consumed = 0usize;
    let mut rows = 0u64;
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
        if let Err(e) = csv_table::push_record(origin, builder, &record, row as usize) {
            bad_rows.push(BadRow {
                row,
                message: e.to_string(),
            });
        }
    }
    Ok((consumed, rows))
}

/// Up to `max_rows` JSON object lines of `data` into `good`: (bytes
/// consumed, rows).
fn read_jsonl_lines(
    data: &[u8],
    rows_before: u64,
    max_rows: usize,
    good: &mut Vec<u8>,
    bad_rows: &mut Vec<BadRow>,
) -> (usize, u64) {
    let mut consumed = 0usize;
    let mut rows = 0u64;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if rows as usize >= max_rows {
            break;
        }
        consumed += line.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        rows += 1;
        match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) if line.trim_ascii_start().starts_with(b"{") => good.extend_from_slice(line),
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
    (consumed, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::batch::sample_context;

    /// Every chunk of one pass from `from`.
    fn pass(path: &Path, from: Option<&FilePosition>, max: usize) -> (Vec<FileChunk>, bool) {
        let mut t =
            LocalTable::open(path, InputFormat::Csv, from, None, max, sample_context("t")).unwrap();
        let mut chunks = Vec::new();
        while let Some(c) = t.next_chunk().unwrap() {
            chunks.push(c);
        }
        (chunks, t.restarted)
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
        let (first, _) = pass(&path, None, 100);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].batch.row_count, 2, "the half-written row waits");
        assert_eq!(first[0].next.rows, 2);
        let (again, _) = pass(&path, Some(&first[0].next), 100);
        assert!(again.is_empty());
        std::fs::write(
            &path,
            "v:long,t:datetime\n1,2025-01-01\n2,2025-01-01\n3,2025-01-02\n4,bad\n",
        )
        .unwrap();
        let (next, restarted) = pass(&path, Some(&first[0].next), 100);
        assert_eq!(next[0].batch.row_count, 1);
        assert_eq!(next[0].bad_rows.len(), 1);
        assert_eq!(next[0].bad_rows[0].row, 4, "rows are numbered across reads");
        assert!(!restarted);
    }

    #[test]
    fn chunks_respect_the_row_limit_and_the_file_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let mut text = String::from("v:long\n");
        for i in 0..10_000 {
            text.push_str(&format!("{i}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let (chunks, _) = pass(&path, None, 3_000);
        let counts: Vec<u32> = chunks.iter().map(|c| c.batch.row_count).collect();
        assert_eq!(counts, [3_000, 3_000, 3_000, 1_000]);
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start, "chunks meet");
        }
        assert_eq!(chunks.last().unwrap().end, text.len() as u64);
        assert_eq!(chunks.last().unwrap().pending_bytes, 0);
    }

    #[test]
    fn a_partly_delivered_chunk_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "v:long\n1\n2\n3\n4\n5\n").unwrap();
        let (chunks, _) = pass(&path, None, 2);
        let first_end = chunks[0].end;
        // Rows appended since, and a larger row limit now: the first chunk
        // still ends where it did.
        std::fs::write(&path, "v:long\n1\n2\n3\n4\n5\n6\n").unwrap();
        let mut t = LocalTable::open(
            &path,
            InputFormat::Csv,
            None,
            Some(first_end),
            100,
            sample_context("t"),
        )
        .unwrap();
        let again = t.next_chunk().unwrap().unwrap();
        assert_eq!((again.batch.row_count, again.end), (2, first_end));
        let rest = t.next_chunk().unwrap().unwrap();
        assert_eq!(rest.batch.row_count, 4);
    }

    #[test]
    fn a_rewritten_or_truncated_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "v:long\n1\n2\n").unwrap();
        let (a, _) = pass(&path, None, 100);
        std::fs::write(&path, "v:long\n9\n").unwrap();
        let (b, restarted) = pass(&path, Some(&a[0].next), 100);
        assert!(restarted);
        assert_eq!(b[0].batch.row_count, 1);
        std::fs::write(&path, "v:long\n7\n8\n").unwrap();
        let (_, restarted) = pass(&path, Some(&b[0].next), 100);
        assert!(restarted, "same length prefix, different content");
    }

    #[test]
    fn json_lines_are_read_in_chunks_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"v\":1}\n[1]\n{\"v\":2}\n{\"v\":3}\n").unwrap();
        let mut t = LocalTable::open(
            &path,
            InputFormat::JsonLines,
            None,
            None,
            2,
            sample_context("t"),
        )
        .unwrap();
        let a = t.next_chunk().unwrap().unwrap();
        assert_eq!((a.batch.row_count, a.bad_rows.len()), (1, 1));
        let b = t.next_chunk().unwrap().unwrap();
        assert_eq!(b.batch.row_count, 2);
        assert!(t.next_chunk().unwrap().is_none());
    }
}
