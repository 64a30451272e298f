//! Kusto REST v2 responses read straight into columns.
//!
//! A response is one JSON array of frames. The frames are visited one by one
//! with serde's seed machinery; the rows of the primary result go cell by
//! cell into [`ColumnBuilder`]s, so no row or cell is ever held as a
//! `serde_json::Value`: a `Value` per cell costs several times the body in
//! memory and most of the parse time. Rows of every other table are skipped
//! without being built.
//!
//! The primary result is the first `DataTable` or `TableHeader` whose
//! `TableKind` is `PrimaryResult`, wherever it sits; `TableFragment`s with
//! its `TableId` add to it (`DataReplace` starts it over).
//!
//! ADX writes `FrameType`, `TableId`, `TableKind`, `TableFragmentType` and
//! `Columns` before `Rows`. When a frame's `Rows` comes before what decides
//! where its rows go, the rows are kept as a borrowed slice of the body
//! ([`RawValue`], no copy) and read once the frame has ended, so a reordered
//! frame is read correctly, only with a second scan of its rows.

use std::fmt;
use std::io::{BufReader, Read};

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::batch::{BatchBuilder, ColumnBuilder, ColumnTooLarge};
use super::error::{InputError, show_value};
use super::kusto_json::{ColumnDef, builder_for, fail_on_errors};
use super::local_table::BadRow;
use crate::wit::{Batch, BatchContext, KustoType};

const PRIMARY_RESULT: &str = "PrimaryResult";
/// What a streamed response is read through: serde_json asks for it one
/// byte at a time, so the reads must come from a buffer.
const READ_BUFFER: usize = 64 * 1024;

/// [`parse_v2`] on bytes: UTF-8 is checked here, once for the whole body,
/// so the JSON reader does not check every string again.
pub fn parse_v2_bytes(
    origin: &str,
    bytes: &[u8],
    context: BatchContext,
) -> Result<Batch, InputError> {
    let body = std::str::from_utf8(bytes).map_err(|e| {
        InputError::format(origin, format!("not a Kusto v2 response: not UTF-8 ({e})"))
    })?;
    parse_v2(origin, body, context)
}

/// The primary result of a v2 response (`[DataSetHeader, DataTable...,
/// DataSetCompletion]`, or the progressive form with TableHeader /
/// TableFragment / TableCompletion) as a batch.
///
/// Fails when the response reports errors (`HasErrors`, `Cancelled`,
/// `OneApiErrors` on a completion frame, an error object in place of a row),
/// has no `DataSetCompletion` (cut short), has no primary result, or holds a
/// row or value that does not fit its columns.
pub fn parse_v2(origin: &str, body: &str, context: BatchContext) -> Result<Batch, InputError> {
    whole(origin, body, context, false).map(|(batch, _)| batch)
}

/// [`parse_v2_bytes`] for query results: a row that does not fit its
/// columns is left out and returned as a [`BadRow`] instead of failing the
/// whole response. Errors the response itself reports still fail it.
pub fn parse_v2_skipping_bad_rows(
    origin: &str,
    bytes: &[u8],
    context: BatchContext,
) -> Result<(Batch, Vec<BadRow>), InputError> {
    let body = std::str::from_utf8(bytes).map_err(|e| {
        InputError::format(origin, format!("not a Kusto v2 response: not UTF-8 ({e})"))
    })?;
    whole(origin, body, context, true)
}

/// How a chunked parse ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The response was read to its end and reported no error; every row
    /// was handed on.
    Complete,
    /// The sink asked to stop; the rest of the response was not read.
    Stopped,
}

/// The primary result of a v2 response read from `reader` as it arrives,
/// handed to `sink` in order as batches covering `max_rows` rows of the
/// response each (rows that do not fit their columns are left out of the
/// batch and handed on beside it as [`BadRow`]s, as by
/// [`parse_v2_skipping_bad_rows`]). Neither the response nor more than one
/// batch of rows is held: memory stays bounded whatever the result's size.
///
/// `sink` returns whether to go on. The last batch (the rest, or an empty
/// one when the result has no rows, so its columns are still told) is
/// handed on only once the whole response was read and reported no error:
/// an error at the end fails the parse after the earlier batches went out,
/// so the caller must treat every batch as provisional until `Complete`.
///
/// The frames are read as by [`parse_v2`], with one difference: a
/// `DataReplace` fragment after rows were handed on fails the parse (they
/// cannot be taken back; the host never asks for progressive results).
pub fn parse_v2_chunks<R: Read>(
    origin: &str,
    reader: R,
    context: &BatchContext,
    max_rows: usize,
    sink: &mut dyn FnMut(Batch, Vec<BadRow>) -> bool,
) -> Result<Parsed, InputError> {
    let mut state = State::new(origin, true, false, context, max_rows.max(1), sink);
    let mut de =
        serde_json::Deserializer::from_reader(BufReader::with_capacity(READ_BUFFER, reader));
    let parsed = Frames(&mut state)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    state.finish(parsed)
}

/// The whole primary result as one batch.
fn whole(
    origin: &str,
    body: &str,
    context: BatchContext,
    skip_bad_rows: bool,
) -> Result<(Batch, Vec<BadRow>), InputError> {
    let mut result = None;
    let mut keep = |batch: Batch, bad_rows: Vec<BadRow>| {
        result = Some((batch, bad_rows));
        true
    };
    let mut state = State::new(origin, skip_bad_rows, true, &context, usize::MAX, &mut keep);
    let mut de = serde_json::Deserializer::from_str(body);
    let parsed = Frames(&mut state)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    state.finish(parsed)?;
    result.ok_or_else(|| InputError::format(origin, "the response gave no rows (internal)"))
}

struct State<'a, 's> {
    origin: &'a str,
    primary: Option<Primary>,
    completed: bool,
    /// The error that stopped the parse; serde's own error type cannot
    /// carry an [`InputError`].
    failure: Option<InputError>,
    skip_bad_rows: bool,
    /// The input is one `&str`, so raw values may borrow from it; a
    /// reader's bytes are gone once read.
    borrowed: bool,
    emit: Emit<'a, 's>,
}

/// Where finished rows go.
struct Emit<'a, 's> {
    context: &'a BatchContext,
    max_rows: usize,
    sink: &'s mut dyn FnMut(Batch, Vec<BadRow>) -> bool,
    /// Batches handed on so far.
    emitted: usize,
    /// The sink asked to stop.
    stopped: bool,
}

struct Primary {
    table_id: Option<i64>,
    builder: BatchBuilder,
    /// Data rows seen so far, for messages (1-based when reported).
    rows: usize,
    /// Rows left out, when bad rows are skipped rather than fatal.
    bad_rows: Option<Vec<BadRow>>,
    /// Rows of the response (kept or left out) not handed on yet.
    pending: usize,
}

impl<'a, 's> State<'a, 's> {
    fn new(
        origin: &'a str,
        skip_bad_rows: bool,
        borrowed: bool,
        context: &'a BatchContext,
        max_rows: usize,
        sink: &'s mut dyn FnMut(Batch, Vec<BadRow>) -> bool,
    ) -> Self {
        State {
            origin,
            primary: None,
            completed: false,
            failure: None,
            skip_bad_rows,
            borrowed,
            emit: Emit {
                context,
                max_rows,
                sink,
                emitted: 0,
                stopped: false,
            },
        }
    }

    /// What the walk over the frames amounts to.
    fn finish(mut self, parsed: Result<(), serde_json::Error>) -> Result<Parsed, InputError> {
        if let Err(e) = parsed {
            if self.emit.stopped {
                return Ok(Parsed::Stopped);
            }
            // The serde error only carries a marker when a visitor stopped
            // on purpose; the real error waits in `failure`.
            return Err(self.failure.take().unwrap_or_else(|| {
                let hint = if e.is_eof() {
                    " (the response is cut short)"
                } else {
                    ""
                };
                InputError::format(self.origin, format!("not a Kusto v2 response: {e}{hint}"))
            }));
        }
        if !self.completed {
            return Err(InputError::format(
                self.origin,
                "the response ends without a DataSetCompletion frame (cut short?)",
            ));
        }
        let Some(mut primary) = self.primary.take() else {
            return Err(InputError::format(
                self.origin,
                "the response has no table of kind PrimaryResult",
            ));
        };
        if (primary.pending > 0 || self.emit.emitted == 0) && !self.emit.flush(&mut primary) {
            return Ok(Parsed::Stopped);
        }
        Ok(Parsed::Complete)
    }
}

impl Emit<'_, '_> {
    /// Hands on the rows read so far; false when the sink wants no more.
    fn flush(&mut self, primary: &mut Primary) -> bool {
        let fresh = primary
            .builder
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c.name(), c.kusto_type()))
            .collect();
        let full = std::mem::replace(&mut primary.builder, BatchBuilder::new(fresh));
        let bad_rows = primary
            .bad_rows
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        primary.pending = 0;
        self.emitted += 1;
        let go_on = (self.sink)(full.finish(self.context.clone()), bad_rows);
        self.stopped = !go_on;
        go_on
    }
}

impl Primary {
    /// `DataReplace`: the table starts over. Rows already handed on cannot
    /// be taken back.
    fn start_over(&mut self, origin: &str, emitted: usize) -> Result<(), InputError> {
        if emitted > 0 {
            return Err(InputError::format(
                origin,
                "a DataReplace fragment came after rows of the result were handed on; progressive results cannot be streamed",
            ));
        }
        self.builder.truncate(0);
        self.rows = 0;
        self.pending = 0;
        if let Some(bad) = &mut self.bad_rows {
            bad.clear();
        }
        Ok(())
    }
}

/// Keeps `error` for [`parse_v2`] and stops the serde walk.
fn stop<E: de::Error>(failure: &mut Option<InputError>, error: InputError) -> E {
    *failure = Some(error);
    E::custom("stopped")
}

struct Frames<'x, 'a, 's>(&'x mut State<'a, 's>);

impl<'de> DeserializeSeed<'de> for Frames<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Frames<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of Kusto v2 frames")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Frame(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameType {
    DataTable,
    TableHeader,
    TableFragment,
    TableCompletion,
    DataSetCompletion,
    /// DataSetHeader, TableProgress and whatever a newer service adds.
    Other,
}

impl<'de> Deserialize<'de> for FrameType {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FrameType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a frame type name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FrameType, E> {
                Ok(match s {
                    "DataTable" => FrameType::DataTable,
                    "TableHeader" => FrameType::TableHeader,
                    "TableFragment" => FrameType::TableFragment,
                    "TableCompletion" => FrameType::TableCompletion,
                    "DataSetCompletion" => FrameType::DataSetCompletion,
                    _ => FrameType::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

enum Key {
    FrameType,
    TableId,
    TableKind,
    TableFragmentType,
    Columns,
    Rows,
    HasErrors,
    Cancelled,
    OneApiErrors,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a frame field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "FrameType" => Key::FrameType,
                    "TableId" => Key::TableId,
                    "TableKind" => Key::TableKind,
                    "TableFragmentType" => Key::TableFragmentType,
                    "Columns" => Key::Columns,
                    "Rows" => Key::Rows,
                    "HasErrors" => Key::HasErrors,
                    "Cancelled" => Key::Cancelled,
                    "OneApiErrors" => Key::OneApiErrors,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// What one frame said, as far as it has been read.
#[derive(Default)]
struct Fields<'de> {
    frame_type: Option<FrameType>,
    table_id: Option<i64>,
    /// `Some(true)` once a `TableKind` of `PrimaryResult` was read.
    primary_kind: Option<bool>,
    /// `Some(true)` once a `TableFragmentType` of `DataReplace` was read.
    replace: Option<bool>,
    columns: Option<Vec<ColumnDef>>,
    seen_columns: bool,
    seen_rows: bool,
    /// This frame opened the primary result.
    opened: bool,
    /// Rows that came before what decides where they go.
    later: Option<Later<'de>>,
    has_errors: Option<bool>,
    cancelled: Option<bool>,
    one_api_errors: Option<Vec<Value>>,
}

/// Rows kept as text until their frame has ended.
enum Later<'de> {
    Borrowed(&'de RawValue),
    /// Read from a stream: nothing to borrow from.
    Owned(Box<RawValue>),
}

impl Later<'_> {
    fn get(&self) -> &str {
        match self {
            Later::Borrowed(raw) => raw.get(),
            Later::Owned(raw) => raw.get(),
        }
    }
}

enum Route {
    /// Into the primary result, while reading.
    Stream,
    Skip,
    /// Not decidable yet: keep the text, decide at the end of the frame.
    Later,
}

impl State<'_, '_> {
    fn route(&self, f: &Fields) -> Route {
        match f.frame_type {
            None => Route::Later,
            Some(FrameType::DataTable | FrameType::TableHeader) => {
                if self.primary.is_some() {
                    return Route::Skip;
                }
                match f.primary_kind {
                    Some(true) if f.seen_columns => Route::Stream,
                    Some(false) => Route::Skip,
                    _ => Route::Later,
                }
            }
            Some(FrameType::TableFragment) => match (&self.primary, f.table_id) {
                (None, _) => Route::Skip,
                (Some(_), None) => Route::Later,
                (Some(p), Some(id)) if p.table_id != Some(id) => Route::Skip,
                // DataReplace may still be announced after the rows.
                _ if f.replace.is_none() => Route::Later,
                _ => Route::Stream,
            },
            Some(_) => Route::Skip,
        }
    }

    fn open_primary<E: de::Error>(&mut self, f: &mut Fields) -> Result<(), E> {
        let columns = f.columns.take().unwrap_or_default();
        let builder = builder_for(self.origin, &columns).map_err(|e| stop(&mut self.failure, e))?;
        self.primary = Some(Primary {
            table_id: f.table_id,
            builder,
            rows: 0,
            bad_rows: self.skip_bad_rows.then(Vec::new),
            pending: 0,
        });
        f.opened = true;
        Ok(())
    }

    /// Rows kept as text by [`Route::Later`], read into the primary result.
    fn push_later<E: de::Error>(&mut self, raw: &str) -> Result<(), E> {
        let Some(primary) = self.primary.as_mut() else {
            return Ok(());
        };
        let mut de = serde_json::Deserializer::from_str(raw);
        Rows {
            primary,
            origin: self.origin,
            failure: &mut self.failure,
            emit: &mut self.emit,
            borrow: true,
        }
        .deserialize(&mut de)
        .map_err(E::custom)
    }

    /// `DataReplace` on the primary result.
    fn start_over<E: de::Error>(&mut self) -> Result<(), E> {
        let emitted = self.emit.emitted;
        match self.primary.as_mut() {
            Some(p) => p
                .start_over(self.origin, emitted)
                .map_err(|e| stop(&mut self.failure, e)),
            None => Ok(()),
        }
    }

    /// What a frame means once all of it has been read.
    fn end_frame<E: de::Error>(&mut self, mut f: Fields) -> Result<(), E> {
        let frame_type = f.frame_type.ok_or_else(|| E::missing_field("FrameType"))?;
        match frame_type {
            FrameType::DataTable | FrameType::TableHeader => {
                if !f.opened && self.primary.is_none() && f.primary_kind == Some(true) {
                    self.open_primary(&mut f)?;
                }
                if let (true, Some(raw)) = (f.opened, &f.later) {
                    self.push_later(raw.get())?;
                }
            }
            FrameType::TableFragment => {
                if let Some(raw) = &f.later
                    && let Some(p) = &self.primary
                    && p.table_id.is_some()
                    && p.table_id == f.table_id
                {
                    if f.replace == Some(true) {
                        self.start_over()?;
                    }
                    self.push_later(raw.get())?;
                }
            }
            FrameType::TableCompletion => {
                fail_on_errors(self.origin, f.one_api_errors.as_deref())
                    .map_err(|e| stop(&mut self.failure, e))?;
            }
            FrameType::DataSetCompletion => {
                self.completed = true;
                fail_on_errors(self.origin, f.one_api_errors.as_deref())
                    .map_err(|e| stop(&mut self.failure, e))?;
                let cancelled = f.cancelled == Some(true);
                if f.has_errors == Some(true) || cancelled {
                    let message = if cancelled {
                        "the query was cancelled"
                    } else {
                        "the response reports errors (HasErrors)"
                    };
                    let error = InputError::QueryFailed {
                        origin: self.origin.to_string(),
                        message: message.to_string(),
                    };
                    return Err(stop(&mut self.failure, error));
                }
            }
            FrameType::Other => {}
        }
        Ok(())
    }
}

struct Frame<'x, 'a, 's>(&'x mut State<'a, 's>);

impl<'de> DeserializeSeed<'de> for Frame<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Frame<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kusto v2 frame (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::FrameType => f.frame_type = Some(map.next_value()?),
                Key::TableId => f.table_id = map.next_value()?,
                Key::TableKind => {
                    let kind: Option<String> = map.next_value()?;
                    f.primary_kind = Some(kind.as_deref() == Some(PRIMARY_RESULT));
                }
                Key::TableFragmentType => {
                    let kind: Option<String> = map.next_value()?;
                    f.replace = Some(kind.as_deref() == Some("DataReplace"));
                }
                Key::Columns => {
                    if f.seen_columns {
                        return Err(de::Error::duplicate_field("Columns"));
                    }
                    f.seen_columns = true;
                    f.columns = map.next_value()?;
                }
                Key::Rows => {
                    if f.seen_rows {
                        return Err(de::Error::duplicate_field("Rows"));
                    }
                    f.seen_rows = true;
                    match state.route(&f) {
                        Route::Skip => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        Route::Later => {
                            f.later = Some(if state.borrowed {
                                Later::Borrowed(map.next_value()?)
                            } else {
                                Later::Owned(map.next_value()?)
                            });
                        }
                        Route::Stream => {
                            if f.frame_type == Some(FrameType::TableFragment) {
                                if f.replace == Some(true) {
                                    state.start_over()?;
                                }
                            } else {
                                state.open_primary(&mut f)?;
                            }
                            let origin = state.origin;
                            let failure = &mut state.failure;
                            let emit = &mut state.emit;
                            let borrow = state.borrowed;
                            match state.primary.as_mut() {
                                Some(primary) => map.next_value_seed(Rows {
                                    primary,
                                    origin,
                                    failure,
                                    emit,
                                    borrow,
                                })?,
                                None => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                    }
                }
                Key::HasErrors => f.has_errors = map.next_value()?,
                Key::Cancelled => f.cancelled = map.next_value()?,
                Key::OneApiErrors => f.one_api_errors = map.next_value()?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        state.end_frame(f)
    }
}

/// The `Rows` array of the primary result.
struct Rows<'p, 'a, 's> {
    primary: &'p mut Primary,
    origin: &'a str,
    failure: &'p mut Option<InputError>,
    emit: &'p mut Emit<'a, 's>,
    /// Dynamic cells may borrow their text from the input.
    borrow: bool,
}

impl<'de> DeserializeSeed<'de> for Rows<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Row {
                primary: &mut *self.primary,
                origin: self.origin,
                failure: &mut *self.failure,
                borrow: self.borrow,
            })?
            .is_some()
        {
            self.primary.pending += 1;
            if self.primary.pending >= self.emit.max_rows && !self.emit.flush(self.primary) {
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// One element of `Rows`: a row array, or an error object in its place.
struct Row<'p, 'o> {
    primary: &'p mut Primary,
    origin: &'o str,
    failure: &'p mut Option<InputError>,
    borrow: bool,
}

impl Row<'_, '_> {
    fn not_a_row<E: de::Error>(self, value: Value) -> Result<(), E> {
        let error = InputError::QueryFailed {
            origin: self.origin.to_string(),
            message: format!("error in place of row {}: {value}", self.primary.rows),
        };
        Err(stop(self.failure, error))
    }
}

impl<'de> DeserializeSeed<'de> for Row<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.primary.rows += 1;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Row<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let kept = self.primary.builder.rows();
        let columns = &mut self.primary.builder.columns;
        let width = columns.len();
        let mut cells = 0;
        let mut ended = false;
        let mut bad = None;
        for column in columns.iter_mut() {
            match seq.next_element_seed(Cell(column, self.borrow))? {
                None => {
                    ended = true;
                    break;
                }
                Some(Ok(())) => cells += 1,
                Some(Err(CellError::Mismatch { value, reason })) => {
                    bad = Some((cells, value, reason));
                    cells += 1;
                    break;
                }
                Some(Err(CellError::TooLarge(source))) => {
                    let error = InputError::TooLarge {
                        origin: self.origin.to_string(),
                        source,
                    };
                    return Err(stop(self.failure, error));
                }
            }
        }
        // A wrong cell count is reported before a wrong value in the same
        // row, so the rest of a row with a bad value is still counted.
        if !ended {
            while seq.next_element::<IgnoredAny>()?.is_some() {
                cells += 1;
            }
        }
        let row = self.primary.rows;
        let error = if cells != width {
            let message = format!("row {row} has {cells} values for {width} columns");
            InputError::format(self.origin, message)
        } else if let Some((index, value, reason)) = bad {
            let column = &self.primary.builder.columns[index];
            InputError::Value {
                origin: self.origin.to_string(),
                row,
                column: column.name().to_string(),
                ty: column.kusto_type(),
                value: show_value(&value),
                reason: reason.to_string(),
            }
        } else {
            return Ok(());
        };
        match &mut self.primary.bad_rows {
            Some(bad_rows) => {
                self.primary.builder.truncate(kept);
                bad_rows.push(BadRow {
                    row: row as u64,
                    message: error.to_string(),
                });
                Ok(())
            }
            None => Err(stop(self.failure, error)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let value = Value::deserialize(MapAccessDeserializer::new(map))?;
        self.not_a_row(value)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.not_a_row(Value::from(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.not_a_row(Value::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.not_a_row(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.not_a_row(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.not_a_row(Value::from(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_a_row(Value::Null)
    }
}

/// Why a cell was not stored. A mismatch keeps the cell as JSON text for
/// the message; the row is finished first (see [`Row::visit_seq`]).
enum CellError {
    Mismatch { value: String, reason: &'static str },
    TooLarge(ColumnTooLarge),
}

impl From<ColumnTooLarge> for CellError {
    fn from(e: ColumnTooLarge) -> Self {
        CellError::TooLarge(e)
    }
}

const OTHER_KIND: &str = "a JSON value of another kind";

fn mismatch(value: Value, reason: &'static str) -> Result<(), CellError> {
    Err(CellError::Mismatch {
        value: value.to_string(),
        reason,
    })
}

/// One cell, pushed into its column by the column's type. The rules are
/// those of [`super::json_values::push_json`], which reads the same values
/// from a `Value`.
/// The flag: a dynamic cell may borrow its text from the input.
struct Cell<'c>(&'c mut ColumnBuilder, bool);

impl<'de> DeserializeSeed<'de> for Cell<'_> {
    type Value = Result<(), CellError>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.0.kusto_type() == KustoType::Dynamic {
            if self.1 {
                let raw = <&RawValue>::deserialize(d)?;
                return Ok(push_dynamic(self.0, raw.get()));
            }
            let raw = Box::<RawValue>::deserialize(d)?;
            return Ok(push_dynamic(self.0, raw.get()));
        }
        d.deserialize_any(self)
    }
}

#[derive(Clone, Copy)]
enum Number {
    Signed(i64),
    /// Only above `i64::MAX`.
    Big(u64),
    Float(f64),
}

impl Number {
    fn json(self) -> Value {
        match self {
            Number::Signed(v) => Value::from(v),
            Number::Big(v) => Value::from(v),
            Number::Float(v) => Value::from(v),
        }
    }
}

fn push_number(column: &mut ColumnBuilder, n: Number) -> Result<(), CellError> {
    let ty = column.kusto_type();
    match (ty, n) {
        (KustoType::Real, Number::Signed(v)) => column.push_real(v as f64),
        (KustoType::Real, Number::Big(v)) => column.push_real(v as f64),
        (KustoType::Real, Number::Float(v)) => column.push_real(v),
        (KustoType::Int | KustoType::Long, Number::Signed(v)) => {
            if ty == KustoType::Int && i32::try_from(v).is_err() {
                return mismatch(n.json(), "not a 32-bit integer");
            }
            column.push_long(v);
        }
        (KustoType::Int | KustoType::Long, _) => {
            return mismatch(n.json(), "not an integer in range");
        }
        (KustoType::Bool, Number::Signed(0)) => column.push_bool(false),
        (KustoType::Bool, Number::Signed(1)) => column.push_bool(true),
        (KustoType::Bool, _) => return mismatch(n.json(), "not a bool"),
        (KustoType::Decimal | KustoType::String, _) => column.push_text(&n.json().to_string())?,
        _ => return mismatch(n.json(), OTHER_KIND),
    }
    Ok(())
}

/// A dynamic cell: a JSON string is kept as its text (v1 and some v2
/// writers send dynamic values as JSON text), anything else as compact JSON
/// text, exactly as sent: numbers keep their digits.
fn push_dynamic(column: &mut ColumnBuilder, raw: &str) -> Result<(), CellError> {
    if raw == "null" {
        column.push_null();
        return Ok(());
    }
    if raw.starts_with('"') {
        match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(plain) if !plain.contains('\\') => column.push_text(plain)?,
            _ => match serde_json::from_str::<String>(raw) {
                Ok(text) => column.push_text(&text)?,
                Err(_) => return mismatch(Value::Null, "not a JSON string"),
            },
        }
        return Ok(());
    }
    if !raw.bytes().any(is_json_space) {
        column.push_text(raw)?;
        return Ok(());
    }
    let mut compact = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii() && is_json_space(c as u8) {
            continue;
        }
        compact.push(c);
    }
    column.push_text(&compact)?;
    Ok(())
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl<'de> Visitor<'de> for Cell<'_> {
    type Value = Result<(), CellError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kusto value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.push_null();
        Ok(Ok(()))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(match self.0.kusto_type() {
            KustoType::Bool => {
                self.0.push_bool(b);
                Ok(())
            }
            KustoType::String => self
                .0
                .push_text(if b { "true" } else { "false" })
                .map_err(CellError::from),
            _ => mismatch(Value::Bool(b), OTHER_KIND),
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(push_number(self.0, Number::Signed(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let n = i64::try_from(v).map_or(Number::Big(v), Number::Signed);
        Ok(push_number(self.0, n))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(push_number(self.0, Number::Float(v)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let column = self.0;
        Ok(match column.kusto_type() {
            KustoType::String | KustoType::Guid => column.push_text(s).map_err(CellError::from),
            _ => match column.push_parsed(s) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => mismatch(Value::from(s), reason),
                Err(e) => Err(CellError::TooLarge(e)),
            },
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let value = Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(push_nested(self.0, value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let value = Value::deserialize(MapAccessDeserializer::new(map))?;
        Ok(push_nested(self.0, value))
    }
}

/// An array or object where a scalar was expected: text in a string column.
fn push_nested(column: &mut ColumnBuilder, value: Value) -> Result<(), CellError> {
    if column.kusto_type() == KustoType::String {
        column.push_text(&value.to_string())?;
        Ok(())
    } else {
        mismatch(value, OTHER_KIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::batch::sample_context;
    use crate::source::kusto_json::read_v2_values;
    use crate::source::values::TICKS_PER_SECOND;
    use crate::wit::{Column, ColumnValues};

    const NUMBERS: &str = include_str!("../../../tests/fixtures/kusto/v2-numbers.json");
    const TIME: &str = include_str!("../../../tests/fixtures/kusto/v2-time.json");
    const TEXT: &str = include_str!("../../../tests/fixtures/kusto/v2-text.json");
    const MIXED: &str = include_str!("../../../tests/fixtures/kusto/v2-mixed.json");
    const PROGRESSIVE: &str = include_str!("../../../tests/fixtures/kusto/v2-progressive.json");
    const ERROR: &str = include_str!("../../../tests/fixtures/kusto/v2-error.json");
    const ERROR_IN_DATA: &str = include_str!("../../../tests/fixtures/kusto/v2-error-in-data.json");

    fn parse(body: &str) -> Result<Batch, InputError> {
        parse_v2("r.json", body, sample_context("t"))
    }

    fn ok(body: &str) -> Batch {
        parse(body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(body: &str) -> InputError {
        match parse(body) {
            Ok(b) => panic!("expected an error, got {} rows", b.row_count),
            Err(e) => e,
        }
    }

    fn column<'b>(batch: &'b Batch, name: &str) -> &'b Column {
        batch
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }

    fn longs(c: &Column) -> Vec<Option<i64>> {
        let (ColumnValues::Longs(v) | ColumnValues::Ticks(v)) = &c.values else {
            panic!("{} holds no integers", c.name)
        };
        (0..v.len())
            .map(|r| c.is_valid(r).then_some(v[r]))
            .collect()
    }

    fn reals(c: &Column) -> Vec<Option<f64>> {
        let ColumnValues::Reals(v) = &c.values else {
            panic!("{} holds no reals", c.name)
        };
        (0..v.len())
            .map(|r| c.is_valid(r).then_some(v[r]))
            .collect()
    }

    fn bools(c: &Column) -> Vec<Option<bool>> {
        let ColumnValues::Booleans(v) = &c.values else {
            panic!("{} holds no booleans", c.name)
        };
        (0..v.len())
            .map(|r| c.is_valid(r).then_some(v[r] == 1))
            .collect()
    }

    fn texts(c: &Column) -> Vec<Option<&str>> {
        assert!(
            c.text_at(0).is_some() || c.is_empty(),
            "{} holds no text",
            c.name
        );
        (0..c.len())
            .map(|r| c.is_valid(r).then(|| c.text_at(r).unwrap_or_default()))
            .collect()
    }

    /// Equal batches; reals compared by bits, so NaN equals NaN.
    fn assert_same(a: &Batch, b: &Batch) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for (x, y) in a.columns.iter().zip(&b.columns) {
            if let (ColumnValues::Reals(x), ColumnValues::Reals(y)) = (&x.values, &y.values) {
                let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(x), bits(y));
            }
        }
    }

    fn reference(body: &str) -> Result<Batch, InputError> {
        read_v2_values("r.json", body.as_bytes(), sample_context("t"))
    }

    fn same_error(body: &str) -> String {
        let new = err(body).to_string();
        let old = match reference(body) {
            Ok(_) => panic!("the reference reader accepts what the parser refuses: {new}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(new, old);
        new
    }

    /// A response around one primary result, as in the fixtures but short.
    fn primary(columns: &str, rows: &str) -> String {
        format!(
            r#"[{{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"}},
{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":{columns},"Rows":{rows}}},
{{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}}]"#
        )
    }

    const NAME_VALUE: &str = r#"[{"ColumnName":"name","ColumnType":"string"},{"ColumnName":"value","ColumnType":"long"},{"ColumnName":"at","ColumnType":"datetime"}]"#;

    #[test]
    fn numbers_are_exact_with_nulls_of_each_type() {
        let b = ok(NUMBERS);
        assert_eq!(b.row_count, 6);
        assert_eq!(
            longs(column(&b, "requests")),
            [
                Some(1),
                Some(-2_147_483_648),
                Some(2_147_483_647),
                Some(0),
                None,
                Some(42)
            ]
        );
        assert_eq!(
            longs(column(&b, "bytes")),
            [
                Some(9_007_199_254_740_993),
                Some(i64::MIN),
                Some(i64::MAX),
                Some(0),
                None,
                Some(-1)
            ]
        );
        let latency = reals(column(&b, "latency"));
        assert_eq!(latency[0], Some(1.5));
        assert!(latency[1].is_some_and(f64::is_nan));
        assert_eq!(latency[2], Some(f64::INFINITY));
        assert_eq!(latency[3], Some(f64::NEG_INFINITY));
        assert_eq!(latency[4], None);
        assert_eq!(latency[5], Some(2.5e-7));
        assert_eq!(
            texts(column(&b, "cost")),
            [
                Some("123.4500"),
                Some("-0.0000001"),
                Some("79228162514264337593543950335"),
                Some("0"),
                None,
                Some("100.10")
            ]
        );
    }

    #[test]
    fn datetimes_and_timespans_to_100_ns() {
        let b = ok(TIME);
        let at = 1_750_846_500 * TICKS_PER_SECOND;
        assert_eq!(
            longs(column(&b, "timestamp")),
            [
                Some(at + 1_234_567),
                Some(at),
                Some(-1),
                None,
                Some(-62_135_596_800 * TICKS_PER_SECOND)
            ]
        );
        assert_eq!(
            longs(column(&b, "duration")),
            [
                Some(300 * TICKS_PER_SECOND),
                Some((93_784 * TICKS_PER_SECOND) + 5_670_000),
                Some(-1),
                None,
                Some(i64::MAX)
            ]
        );
        assert_eq!(column(&b, "timestamp").kusto_type, KustoType::Datetime);
        assert_eq!(column(&b, "duration").kusto_type, KustoType::Timespan);
    }

    #[test]
    fn strings_guids_bools_and_dynamic() {
        let b = ok(TEXT);
        assert_eq!(
            texts(column(&b, "ServiceName")),
            [
                Some("checkout-api"),
                Some(""),
                Some("quote \" backslash \\ café ✓"),
                None,
                Some("ünïcødé ✓"),
                Some("x")
            ]
        );
        assert_eq!(
            texts(column(&b, "RequestId")),
            [
                Some("5b1f0a8e-3c0e-4b5e-9a41-0c9f3b7d2e11"),
                Some("00000000-0000-0000-0000-000000000000"),
                None,
                None,
                Some("6e2b9d1c-8a47-4f3e-b5d0-7c1a2e3f4b60"),
                Some("6e2b9d1c-8a47-4f3e-b5d0-7c1a2e3f4b61")
            ]
        );
        assert_eq!(
            bools(column(&b, "Healthy")),
            [Some(true), Some(false), None, None, Some(true), Some(false)]
        );
        assert_eq!(
            texts(column(&b, "Properties")),
            [
                Some(
                    r#"{"pod":"checkout-7d9f","ports":[80,443],"limits":{"cpu":"500m","memory":2.5}}"#
                ),
                Some("plain text"),
                Some(r#"[1,"two",{"three":3}]"#),
                None,
                Some("12345678901234567890"),
                Some("true")
            ]
        );
    }

    #[test]
    fn dynamic_values_are_compact_and_keep_their_digits() {
        let columns = r#"[{"ColumnName":"d","ColumnType":"dynamic"}]"#;
        let b = ok(&primary(
            columns,
            r#"[[ { "a" : [ 1 , 2 ] , "s" : "x y \" z" } ], [1.50], ["esc\"aped\n"], [ null ]]"#,
        ));
        assert_eq!(
            texts(column(&b, "d")),
            [
                Some(r#"{"a":[1,2],"s":"x y \" z"}"#),
                Some("1.50"),
                Some("esc\"aped\n"),
                None
            ]
        );
    }

    #[test]
    fn the_same_batches_as_the_value_based_reader() {
        for fixture in [NUMBERS, TIME, TEXT, MIXED, PROGRESSIVE] {
            let old = reference(fixture).unwrap_or_else(|e| panic!("{e}"));
            assert_same(&ok(fixture), &old);
        }
        let b = ok(MIXED);
        assert_eq!(b.row_count, 4);
        assert_eq!(b.columns.len(), 12);
    }

    #[test]
    fn the_bytes_entry_checks_utf8_once() {
        let b = parse_v2_bytes("r.json", MIXED.as_bytes(), sample_context("t"));
        assert_eq!(b.map(|b| b.row_count).ok(), Some(4));
        let mut bad = primary(NAME_VALUE, r#"[["é",1,null]]"#).into_bytes();
        let at = bad.iter().position(|&c| c == 0xC3).unwrap_or_default();
        bad[at] = 0xFF;
        let e = parse_v2_bytes("r.json", &bad, sample_context("t")).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn progressive_fragments_add_up() {
        let b = ok(PROGRESSIVE);
        assert_eq!(b.row_count, 4);
        assert_eq!(
            texts(column(&b, "metric_name")),
            [
                Some("requests_total"),
                Some("requests_total"),
                Some("errors_total"),
                Some("errors_total")
            ]
        );
        assert_eq!(
            reals(column(&b, "metric_value")),
            [Some(10.0), Some(12.0), Some(1.0), Some(0.5)]
        );
        assert_eq!(longs(column(&b, "timestamp"))[3].map(|t| t % 10), Some(1));
    }

    #[test]
    fn data_replace_starts_the_table_over() {
        let body = r#"[{"FrameType":"DataSetHeader","IsProgressive":true,"Version":"v2.0"},
{"FrameType":"TableHeader","TableId":3,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}]},
{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":3,"Rows":[[1],[2]]},
{"FrameType":"TableFragment","TableFragmentType":"DataReplace","TableId":3,"Rows":[[7]]},
{"FrameType":"TableFragment","TableId":3,"Rows":[[8]],"TableFragmentType":"DataAppend"},
{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":4,"Rows":[["other table"]]},
{"FrameType":"TableCompletion","TableId":3,"RowCount":2},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        assert_eq!(longs(column(&ok(body), "n")), [Some(7), Some(8)]);
    }

    #[test]
    fn the_first_primary_result_wins_wherever_it_is() {
        // The query properties table has other columns and would not fit;
        // the second primary result holds a value its column refuses.
        let body = r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"},
{"FrameType":"DataTable","TableId":0,"TableKind":"QueryProperties","TableName":"@ExtendedProperties","Columns":[{"ColumnName":"TableId","ColumnType":"int"},{"ColumnName":"Key","ColumnType":"string"},{"ColumnName":"Value","ColumnType":"dynamic"}],"Rows":[[1,"Visualization","{}"]]},
{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}],"Rows":[[1],[2]]},
{"FrameType":"DataTable","TableId":2,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}],"Rows":[["not a number"]]},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        let b = ok(body);
        assert_eq!(longs(column(&b, "n")), [Some(1), Some(2)]);
        assert_same(&b, &reference(body).unwrap_or_else(|e| panic!("{e}")));
    }

    #[test]
    fn rows_before_columns_are_read_after_the_frame() {
        let body = r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"},
{"Rows":[["ignored"]],"FrameType":"DataTable","TableKind":"QueryProperties","Columns":[{"ColumnName":"x","ColumnType":"string"}]},
{"Rows":[[1,"a"],[2,"b"]],"TableId":1,"Columns":[{"ColumnName":"n","ColumnType":"long"},{"ColumnName":"s","ColumnType":"string"}],"TableKind":"PrimaryResult","FrameType":"DataTable"},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        let b = ok(body);
        assert_eq!(longs(column(&b, "n")), [Some(1), Some(2)]);
        assert_eq!(texts(column(&b, "s")), [Some("a"), Some("b")]);

        let progressive = r#"[{"FrameType":"DataSetHeader","IsProgressive":true,"Version":"v2.0"},
{"FrameType":"TableHeader","TableKind":"PrimaryResult","TableId":1,"Columns":[{"ColumnName":"n","ColumnType":"long"}]},
{"Rows":[[1]],"FrameType":"TableFragment","TableId":1},
{"FrameType":"TableFragment","Rows":[[2]],"TableId":1},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        assert_eq!(longs(column(&ok(progressive), "n")), [Some(1), Some(2)]);

        let bad = r#"[{"Rows":[[1,2]],"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}]},
{"FrameType":"DataSetCompletion"}]"#;
        assert_eq!(
            err(bad).to_string(),
            "r.json: row 1 has 2 values for 1 columns"
        );
    }

    #[test]
    fn errors_at_the_end_of_the_stream() {
        let e = same_error(ERROR);
        assert!(matches!(err(ERROR), InputError::QueryFailed { .. }), "{e}");
        assert_eq!(
            e,
            "r.json: the query failed: LimitsExceeded: Query execution has exceeded the allowed limits (80DA0003): The results of this query exceed the set limit of 500000 records, so not all records were returned (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003). See https://aka.ms/kustoquerylimits for more information and possible solutions.."
        );

        let done = |fields: &str| {
            format!(
                r#"[{{"FrameType":"DataSetHeader","Version":"v2.0"}},{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","Columns":[],"Rows":[]}},{{"FrameType":"DataSetCompletion",{fields}}}]"#
            )
        };
        assert_eq!(
            same_error(&done(r#""HasErrors":true,"Cancelled":false"#)),
            "r.json: the query failed: the response reports errors (HasErrors)"
        );
        assert_eq!(
            same_error(&done(r#""HasErrors":false,"Cancelled":true"#)),
            "r.json: the query failed: the query was cancelled"
        );
        // OneApiErrors fail the response even without HasErrors.
        let e = err(&done(
            r#""HasErrors":false,"OneApiErrors":[{"error":{"message":"partial"}}]"#,
        ));
        assert_eq!(e.to_string(), "r.json: the query failed: partial");

        let table_completion = r#"[{"FrameType":"DataSetHeader","IsProgressive":true,"Version":"v2.0"},
{"FrameType":"TableHeader","TableId":1,"TableKind":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}]},
{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":1,"Rows":[[1]]},
{"FrameType":"TableCompletion","TableId":1,"RowCount":1,"OneApiErrors":[{"error":{"code":"LimitsExceeded","message":"too many rows"}}]},
{"FrameType":"DataSetCompletion","HasErrors":true,"Cancelled":false}]"#;
        assert_eq!(
            same_error(table_completion),
            "r.json: the query failed: LimitsExceeded: too many rows"
        );
    }

    #[test]
    fn an_error_object_in_place_of_a_row() {
        let e = same_error(ERROR_IN_DATA);
        assert!(
            e.starts_with(
                r#"r.json: the query failed: error in place of row 3: {"OneApiErrors":[{"error":{"code":"LimitsExceeded""#
            ),
            "{e}"
        );
    }

    #[test]
    fn a_response_cut_short() {
        let complete_array = r#"[{"FrameType":"DataSetHeader","Version":"v2.0"},{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}],"Rows":[[1]]}]"#;
        assert_eq!(
            same_error(complete_array),
            "r.json: the response ends without a DataSetCompletion frame (cut short?)"
        );
        let cut = &MIXED[..MIXED.len() / 2];
        let e = err(cut);
        assert!(matches!(e, InputError::Format { .. }), "{e}");
        assert!(
            e.to_string().contains("EOF while parsing") && e.to_string().contains("cut short"),
            "{e}"
        );
    }

    #[test]
    fn rows_of_the_wrong_width() {
        assert_eq!(
            same_error(&primary(NAME_VALUE, r#"[["a",1,null],["b",2]]"#)),
            "r.json: row 2 has 2 values for 3 columns"
        );
        assert_eq!(
            same_error(&primary(NAME_VALUE, r#"[["a",1,null,4,5]]"#)),
            "r.json: row 1 has 5 values for 3 columns"
        );
        // The width is reported before a bad value in the same row.
        assert_eq!(
            same_error(&primary(NAME_VALUE, r#"[["a","x",null,4]]"#)),
            "r.json: row 1 has 4 values for 3 columns"
        );
    }

    #[test]
    fn values_of_the_wrong_kind_name_row_column_type_and_value() {
        let cases = [
            (
                r#"[["a",1,null],["b","12x",null]]"#,
                r#"r.json: row 2, column `value` (long): cannot read "\"12x\"": not a 64-bit integer"#,
            ),
            (
                r#"[["a",1.5,null]]"#,
                r#"r.json: row 1, column `value` (long): cannot read "1.5": not an integer in range"#,
            ),
            (
                r#"[["a",18446744073709551615,null]]"#,
                r#"r.json: row 1, column `value` (long): cannot read "18446744073709551615": not an integer in range"#,
            ),
            (
                r#"[["a",1,1750846500]]"#,
                r#"r.json: row 1, column `at` (datetime): cannot read "1750846500": a JSON value of another kind"#,
            ),
            (
                r#"[["a",1,"2025-02-30T00:00:00Z"]]"#,
                r#"r.json: row 1, column `at` (datetime): cannot read "\"2025-02-30T00:00:00Z\"": date out of range"#,
            ),
            (
                r#"[["a",{"n":1},null]]"#,
                r#"r.json: row 1, column `value` (long): cannot read "{\"n\":1}": a JSON value of another kind"#,
            ),
            (
                r#"[["a",true,null]]"#,
                r#"r.json: row 1, column `value` (long): cannot read "true": a JSON value of another kind"#,
            ),
        ];
        for (rows, message) in cases {
            let e = same_error(&primary(NAME_VALUE, rows));
            assert_eq!(e, message);
        }
        let int =
            r#"[{"ColumnName":"i","ColumnType":"int"},{"ColumnName":"b","ColumnType":"bool"}]"#;
        assert_eq!(
            same_error(&primary(int, "[[3000000000,true]]")),
            r#"r.json: row 1, column `i` (int): cannot read "3000000000": not a 32-bit integer"#
        );
        assert_eq!(
            same_error(&primary(int, "[[1,2]]")),
            r#"r.json: row 1, column `b` (bool): cannot read "2": not a bool"#
        );
        assert!(matches!(
            err(&primary(int, "[[1,2]]")),
            InputError::Value { row: 1, .. }
        ));
        // What the old reader accepted stays accepted: numbers in string
        // columns, 0/1 as bools, numbers as decimal text.
        let lenient = r#"[{"ColumnName":"s","ColumnType":"string"},{"ColumnName":"b","ColumnType":"bool"},{"ColumnName":"d","ColumnType":"decimal"}]"#;
        let body = primary(lenient, r#"[[12,1,1.25],[[1,2],0,7],[true,"true",""]]"#);
        let b = ok(&body);
        assert_same(&b, &reference(&body).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            texts(column(&b, "s")),
            [Some("12"), Some("[1,2]"), Some("true")]
        );
        assert_eq!(
            bools(column(&b, "b")),
            [Some(true), Some(false), Some(true)]
        );
        assert_eq!(texts(column(&b, "d")), [Some("1.25"), Some("7"), None]);
    }

    #[test]
    fn responses_that_are_not_v2() {
        assert_eq!(
            same_error(r#"[{"FrameType":"DataSetHeader"},{"FrameType":"DataSetCompletion"}]"#),
            "r.json: the response has no table of kind PrimaryResult"
        );
        let unknown = primary(r#"[{"ColumnName":"x","ColumnType":"blob"}]"#, "[]");
        assert_eq!(
            same_error(&unknown),
            "r.json: column `x` has unknown type `blob`"
        );
        for body in [r#"{"Tables":[]}"#, r#"[{"TableId":1}]"#, "[1]", "[] x", ""] {
            let e = err(body);
            assert!(
                e.to_string()
                    .starts_with("r.json: not a Kusto v2 response: "),
                "{e}"
            );
            assert!(reference(body).is_err());
        }
    }

    /// Hands out `body` `step` bytes per read, as a network would.
    struct Trickle<'b> {
        body: &'b [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.body.len());
            buf[..n].copy_from_slice(&self.body[..n]);
            self.body = &self.body[n..];
            Ok(n)
        }
    }

    type Chunks = Vec<(Batch, Vec<BadRow>)>;

    /// The chunks a streamed parse hands on, and how it ended.
    fn chunked(body: &str, max_rows: usize) -> (Chunks, Result<Parsed, InputError>) {
        let mut chunks = Vec::new();
        let reader = Trickle {
            body: body.as_bytes(),
            step: 7,
        };
        let mut sink = |batch: Batch, bad: Vec<BadRow>| {
            chunks.push((batch, bad));
            true
        };
        let ended = parse_v2_chunks("r.json", reader, &sample_context("t"), max_rows, &mut sink);
        (chunks, ended)
    }

    /// Each row as text, cell by cell, whatever the column's encoding.
    fn rows_of(batch: &Batch) -> Vec<Vec<String>> {
        (0..batch.row_count as usize)
            .map(|r| {
                batch
                    .columns
                    .iter()
                    .map(|c| {
                        if !c.is_valid(r) {
                            return "null".to_string();
                        }
                        match &c.values {
                            ColumnValues::Booleans(v) => v[r].to_string(),
                            ColumnValues::Longs(v) | ColumnValues::Ticks(v) => v[r].to_string(),
                            ColumnValues::Reals(v) => format!("{:x}", v[r].to_bits()),
                            ColumnValues::Text(_) | ColumnValues::Dictionary(_) => {
                                format!("{:?}", c.text_at(r))
                            }
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn schema(batch: &Batch) -> Vec<(String, KustoType)> {
        batch
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.kusto_type))
            .collect()
    }

    #[test]
    fn chunks_of_one_two_and_three_rows_add_up_to_the_whole_body() {
        for fixture in [NUMBERS, TIME, TEXT, MIXED, PROGRESSIVE] {
            let whole = ok(fixture);
            for max_rows in [1, 2, 3] {
                let (chunks, ended) = chunked(fixture, max_rows);
                assert_eq!(ended.ok(), Some(Parsed::Complete));
                let total = whole.row_count as usize;
                assert_eq!(chunks.len(), total.div_ceil(max_rows), "{max_rows}");
                let mut rows = Vec::new();
                for (i, (batch, bad)) in chunks.iter().enumerate() {
                    assert!(bad.is_empty());
                    assert_eq!(schema(batch), schema(&whole));
                    assert_eq!(batch.context, whole.context);
                    let expected = if i + 1 < chunks.len() {
                        max_rows
                    } else {
                        total - i * max_rows
                    };
                    assert_eq!(batch.row_count as usize, expected);
                    rows.extend(rows_of(batch));
                }
                assert_eq!(rows, rows_of(&whole), "chunks of {max_rows}");
            }
        }
    }

    #[test]
    fn bad_rows_go_with_the_chunk_of_their_stretch() {
        let body = primary(
            NAME_VALUE,
            r#"[["a",1,null],["b","x",null],["c",3,null],["d",4,5],["e",5,null]]"#,
        );
        let (whole, whole_bad) =
            parse_v2_skipping_bad_rows("r.json", body.as_bytes(), sample_context("t"))
                .unwrap_or_else(|e| panic!("{e}"));
        let (chunks, ended) = chunked(&body, 2);
        assert_eq!(ended.ok(), Some(Parsed::Complete));
        // Each chunk covers two rows of the response, kept or not.
        let shape: Vec<(u32, Vec<u64>)> = chunks
            .iter()
            .map(|(b, bad)| (b.row_count, bad.iter().map(|r| r.row).collect()))
            .collect();
        assert_eq!(shape, [(1, vec![2]), (1, vec![4]), (1, vec![])]);
        let rows: Vec<_> = chunks.iter().flat_map(|(b, _)| rows_of(b)).collect();
        assert_eq!(rows, rows_of(&whole));
        let messages: Vec<String> = chunks
            .iter()
            .flat_map(|(_, bad)| bad.iter().map(|r| r.message.clone()))
            .collect();
        let expected: Vec<String> = whole_bad.iter().map(|r| r.message.clone()).collect();
        assert_eq!(messages, expected);
        assert!(messages[1].contains("row 4, column `at`"), "{messages:?}");
    }

    #[test]
    fn an_error_at_the_end_fails_the_parse_after_the_chunks_before_it() {
        // Two rows, then HasErrors: the full chunk went out, the rest not.
        let (chunks, ended) = chunked(ERROR, 1);
        let e = ended.expect_err("the response reports errors");
        let whole = parse_v2_skipping_bad_rows("r.json", ERROR.as_bytes(), sample_context("t"))
            .expect_err("the response reports errors");
        assert_eq!(e.to_string(), whole.to_string());
        assert!(matches!(e, InputError::QueryFailed { .. }), "{e}");
        assert_eq!(chunks.len(), 2);
        let (chunks, ended) = chunked(ERROR, 3);
        assert!(ended.is_err());
        assert!(chunks.is_empty(), "the last chunk waits for the end");

        let (chunks, ended) = chunked(ERROR_IN_DATA, 1);
        let e = ended.expect_err("an error in place of row 3");
        assert!(e.to_string().contains("error in place of row 3"), "{e}");
        assert_eq!(chunks.len(), 2);

        let cut = &MIXED[..MIXED.len() / 2];
        let (_, ended) = chunked(cut, 1);
        let e = ended.expect_err("cut short");
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn an_empty_result_is_one_empty_chunk_with_its_columns() {
        let (chunks, ended) = chunked(&primary(NAME_VALUE, "[]"), 10);
        assert_eq!(ended.ok(), Some(Parsed::Complete));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].0.row_count, 0);
        assert_eq!(chunks[0].0.columns.len(), 3);
    }

    #[test]
    fn a_sink_that_wants_no_more_stops_the_read() {
        let mut seen = 0;
        let mut sink = |_: Batch, _: Vec<BadRow>| {
            seen += 1;
            false
        };
        let ended = parse_v2_chunks(
            "r.json",
            MIXED.as_bytes(),
            &sample_context("t"),
            1,
            &mut sink,
        );
        assert_eq!(ended.ok(), Some(Parsed::Stopped));
        assert_eq!(seen, 1);
    }

    #[test]
    fn data_replace_after_rows_were_handed_on_fails() {
        let body = r#"[{"FrameType":"DataSetHeader","IsProgressive":true,"Version":"v2.0"},
{"FrameType":"TableHeader","TableId":3,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"n","ColumnType":"long"}]},
{"FrameType":"TableFragment","TableFragmentType":"DataAppend","TableId":3,"Rows":[[1],[2]]},
{"FrameType":"TableFragment","TableFragmentType":"DataReplace","TableId":3,"Rows":[[7]]},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        let (chunks, ended) = chunked(body, 10);
        assert_eq!(ended.ok(), Some(Parsed::Complete));
        assert_eq!(rows_of(&chunks[0].0), [["7"]]);
        let (chunks, ended) = chunked(body, 1);
        let e = ended.expect_err("rows 1 and 2 went out");
        assert!(e.to_string().contains("DataReplace"), "{e}");
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn reordered_frames_and_dynamic_cells_read_from_a_stream() {
        let body = r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"},
{"Rows":[[1,{"a" : [1, 2]}],[2,"text"]],"TableId":1,"Columns":[{"ColumnName":"n","ColumnType":"long"},{"ColumnName":"d","ColumnType":"dynamic"}],"TableKind":"PrimaryResult","FrameType":"DataTable"},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;
        let (chunks, ended) = chunked(body, 1);
        assert_eq!(ended.ok(), Some(Parsed::Complete));
        let rows: Vec<_> = chunks.iter().flat_map(|(b, _)| rows_of(b)).collect();
        assert_eq!(rows, rows_of(&ok(body)));
        assert_eq!(texts(column(&chunks[0].0, "d")), [Some(r#"{"a":[1,2]}"#)]);
    }
}
