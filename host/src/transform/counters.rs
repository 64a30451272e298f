//! What the sandbox cut or dropped from guests, counted for `/metrics`.
//! Process-wide: the counters are shared by every guest call and registered
//! by [`crate::telemetry::metrics::Metrics`].

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TextLabels {
    /// `log`, `error` or `skip_reason`.
    pub what: String,
}

#[derive(Default)]
pub struct GuestCounters {
    /// Guest text cut to its limit before it reached logs, metrics or status.
    pub text_cut: Family<TextLabels, Counter>,
    /// Guest log lines dropped past the per-call limit.
    pub log_lines_dropped: Counter,
    /// Skip reasons counted as `other` past the per-guest limit.
    pub skip_reasons_folded: Counter,
}

pub static COUNTERS: LazyLock<GuestCounters> = LazyLock::new(GuestCounters::default);

pub(crate) fn text_cut(what: &str) {
    COUNTERS
        .text_cut
        .get_or_create(&TextLabels {
            what: what.to_string(),
        })
        .inc();
}
