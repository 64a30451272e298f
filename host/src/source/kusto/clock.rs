//! ADX's clock, not the host's: ingestion times are stamped by ADX, so a
//! window that ends at "now minus the settle delay" must mean ADX's now. A
//! host clock ahead of ADX by more than the settle delay would otherwise
//! move the cursor past rows ADX has not stamped yet, and they would never
//! be read.
//!
//! The offset is measured with `print now()` (halfway through the round
//! trip) at most every [`CLOCK_REFRESH`] per database, so thousands of
//! exporters cost one query per database and refresh, not one per run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::window::{now_ticks, ticks};
use super::{KustoClient, KustoError, KustoErrorKind, Query};
use crate::source::kusto_v2::parse_v2;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::DatabaseLabels;
use crate::wit::{BatchContext, ColumnValues};

/// How long a measured offset is used before it is measured again.
pub const CLOCK_REFRESH: Duration = Duration::from_secs(300);
/// An offset past this is logged as a warning: the host's clock is off.
pub const SKEW_WARNING: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct AdxClock {
    /// By database: ADX's clock minus the host's (ticks), and when measured.
    offsets: Mutex<HashMap<String, (i64, Instant)>>,
}

impl AdxClock {
    /// ADX's now for `database`, in ticks. A failed measurement falls back
    /// to the last offset measured (logged); with none, it fails the run
    /// (retryable) rather than trust the host's clock.
    pub async fn now(
        &self,
        client: &KustoClient,
        database: &str,
        metrics: &Metrics,
    ) -> Result<i64, KustoError> {
        let known = self.lock().get(database).copied();
        if let Some((offset, at)) = known
            && at.elapsed() < CLOCK_REFRESH
        {
            return Ok(now_ticks() + offset);
        }
        match measure(client, database).await {
            Ok(offset) => {
                self.lock()
                    .insert(database.to_string(), (offset, Instant::now()));
                // A tick is 100 ns.
                let seconds = offset as f64 / 1e7;
                metrics
                    .adx_clock_offset
                    .get_or_create(&DatabaseLabels {
                        database: database.to_string(),
                    })
                    .set(seconds);
                if offset.unsigned_abs() > ticks(SKEW_WARNING).unsigned_abs() {
                    tracing::warn!(
                        database,
                        adx_minus_host_seconds = seconds,
                        "ADX's clock and the host's differ; windows follow ADX's"
                    );
                }
                Ok(now_ticks() + offset)
            }
            Err(e) => match known {
                Some((offset, _)) => {
                    tracing::warn!(database, error = %e, "cannot read ADX's clock; using the offset measured before");
                    Ok(now_ticks() + offset)
                }
                None => Err(e),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant)>> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// ADX's clock minus the host's, in ticks.
async fn measure(client: &KustoClient, database: &str) -> Result<i64, KustoError> {
    let sent = now_ticks();
    let answer = client
        .query(&Query {
            database: database.to_string(),
            csl: "print now()".to_string(),
            parameters: Vec::new(),
            max_records: None,
            activity: "Clock",
        })
        .await?;
    let received = now_ticks();
    let bad = |why: String| {
        KustoError::new(
            database,
            &answer.request_id,
            KustoErrorKind::Network(format!("reading ADX's clock: {why}")),
        )
    };
    let body = std::str::from_utf8(&answer.body).map_err(|e| bad(e.to_string()))?;
    let context = BatchContext {
        database: database.to_string(),
        table: String::new(),
        rule_name: String::new(),
        rule_namespace: String::new(),
        exporter_name: String::new(),
        window_start: None,
        window_end: None,
    };
    let batch = parse_v2("print now()", body, context).map_err(|e| bad(e.to_string()))?;
    let adx = match batch.columns.first().map(|c| &c.values) {
        Some(ColumnValues::Ticks(t)) if batch.row_count == 1 => t[0],
        _ => return Err(bad("the answer is not one datetime".into())),
    };
    Ok(adx - (sent + (received - sent) / 2))
}
