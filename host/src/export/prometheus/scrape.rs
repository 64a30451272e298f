//! The `prometheusScrape` exporter: the latest point of every series the
//! MetricsExporters naming it produced, kept in memory and served on the
//! host's HTTP server in the Prometheus text format, or OpenMetrics when the
//! scraper asks for it, each sample with its own timestamp.
//!
//! Memory is bounded twice: a series not updated for `staleAfter` is
//! dropped, and at most `maxSeries` are held; a new series beyond that is
//! refused, counted and warned about, while the series already held keep
//! being updated.
//!
//! Several MetricsExporters (teams) can share one scrape exporter, so each
//! family belongs to the MetricsExporter that first served it, until its
//! series go stale. An update is checked whole before anything of it is
//! taken: one naming a family (or a sample name) that another
//! MetricsExporter serves, or a family of its own under another type, is
//! refused as a whole, naming both MetricsExporters and the family; the
//! families already served are left as they were.
//!
//! Delta points are served as running totals ([`super::cumulative`]), kept
//! per scrape exporter and committed with the update (not when it is
//! refused). In OpenMetrics a counter made from deltas carries `_created`,
//! the start of its running total, which starts again after a restart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::UNNAMED_OWNER;
use super::config::ScrapeConfig;
use super::cumulative::Accumulator;
use super::naming::FamilyType;
use super::resource_labels::TARGET_INFO;
use super::series::{ConvertOptions, convert_with, format_float};
use crate::export::Resource;
use crate::export::deliver::{Delivered, ErrorKind, ExportError};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ExporterLabels;
use crate::wit::Output;

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy)]
struct Latest {
    value: f64,
    timestamp_ms: i64,
    updated: Instant,
    /// A running total of deltas: when it started (ms).
    created_ms: Option<i64>,
}

#[derive(Debug)]
struct FamilyState {
    /// The MetricsExporter (`namespace/name`) that serves it.
    owner: String,
    family_type: FamilyType,
    help: String,
    unit: String,
    /// By (sample name, labels): sorted, so a scrape is stable.
    series: BTreeMap<(String, Vec<(String, String)>), Latest>,
}

#[derive(Debug, Default)]
struct Inner {
    families: BTreeMap<String, FamilyState>,
    series: usize,
    /// Whether the limit was hit since the last warning.
    warned_full: bool,
}

pub struct ScrapeStore {
    name: String,
    path: String,
    stale_after: Duration,
    max_series: usize,
    options: ConvertOptions,
    inner: Mutex<Inner>,
    metrics: OnceLock<std::sync::Arc<Metrics>>,
    totals: Accumulator,
}

impl ScrapeStore {
    pub fn new(name: &str, config: &ScrapeConfig) -> ScrapeStore {
        ScrapeStore {
            name: name.to_string(),
            path: config.path.clone(),
            stale_after: config.stale_after,
            max_series: config.max_series,
            options: config.convert_options(),
            inner: Mutex::new(Inner::default()),
            metrics: OnceLock::new(),
            totals: Accumulator::new(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path it is served at.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the series count and refusals are reported.
    pub fn attach_metrics(&self, metrics: std::sync::Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`ScrapeStore::update_for`] from an unnamed MetricsExporter.
    pub fn update(&self, resource: &Resource, output: &Output) -> Result<Delivered, ExportError> {
        self.update_for(UNNAMED_OWNER, resource, output)
    }

    /// Takes the output's newest point of each series, for the
    /// MetricsExporter `owner`; all or nothing when a family clashes (see
    /// the module's docs). Never fails for lack of room: a series that does
    /// not fit is counted, not an error that would hold the rows back
    /// forever.
    pub fn update_for(
        &self,
        owner: &str,
        resource: &Resource,
        output: &Output,
    ) -> Result<Delivered, ExportError> {
        let (converted, staged) = {
            let mut view = self.totals.stage(owner);
            let converted = convert_with(resource, output, &self.options, Some(&mut view))
                .map_err(|e| ExportError::new(&self.name, ErrorKind::Config(e.to_string())))?;
            (converted, view.finish())
        };
        for (reason, count) in &converted.dropped {
            tracing::warn!(exporter = %self.name, metrics_exporter = owner, reason, points = count, "delta points Prometheus cannot take were left out");
        }
        let now = Instant::now();
        let mut refused = 0u64;
        let mut points = 0usize;
        let mut inner = self.lock();
        prune(&mut inner, now, self.stale_after);
        // Everything is checked before anything is taken.
        for family in &converted.families {
            if let Some(clash) = clash(&inner, owner, family) {
                drop(inner);
                if let Some(m) = self.metrics.get() {
                    m.scrape_updates_refused
                        .get_or_create(&ExporterLabels {
                            exporter: self.name.clone(),
                        })
                        .inc();
                }
                // Refused whole: the deltas are not counted either.
                drop(staged);
                return Err(ExportError::new(&self.name, ErrorKind::Config(clash)));
            }
        }
        for family in converted.families {
            let mut added = 0usize;
            let room = self.max_series.saturating_sub(inner.series);
            let state = inner
                .families
                .entry(family.name.clone())
                .or_insert_with(|| FamilyState {
                    owner: owner.to_string(),
                    family_type: family.family_type,
                    help: family.help.clone(),
                    unit: family.unit.clone(),
                    series: BTreeMap::new(),
                });
            if !family.help.is_empty() {
                state.help = family.help.clone();
            }
            // A histogram's series (buckets, sum and count of one label set)
            // are taken or refused together: half a histogram is wrong.
            let histogram = family.family_type == FamilyType::Histogram;
            let mut groups: Vec<Vec<super::series::Series>> = Vec::new();
            let mut slots: std::collections::HashMap<Vec<(String, String)>, usize> =
                std::collections::HashMap::new();
            for series in family.series {
                let mut slot: Vec<(String, String)> = series
                    .labels
                    .iter()
                    .filter(|(k, _)| !histogram || k != super::series::LE)
                    .cloned()
                    .collect();
                if !histogram {
                    slot.push(("__name__".into(), series.name.clone()));
                }
                match slots.get(&slot) {
                    Some(&i) => groups[i].push(series),
                    None => {
                        slots.insert(slot, groups.len());
                        groups.push(vec![series]);
                    }
                }
            }
            for group in groups {
                let new = group
                    .iter()
                    .filter(|s| {
                        !state
                            .series
                            .contains_key(&(s.name.clone(), s.labels.clone()))
                    })
                    .count();
                let admit = added + new <= room;
                for series in group {
                    let Some(last) = series.samples.last().copied() else {
                        continue;
                    };
                    points += series.samples.len();
                    let key = (series.name, series.labels);
                    match state.series.get_mut(&key) {
                        Some(held) => {
                            if last.timestamp_ms >= held.timestamp_ms {
                                held.value = last.value;
                                held.timestamp_ms = last.timestamp_ms;
                                held.created_ms = series.start_ms;
                            }
                            held.updated = now;
                        }
                        None if admit => {
                            state.series.insert(
                                key,
                                Latest {
                                    value: last.value,
                                    timestamp_ms: last.timestamp_ms,
                                    updated: now,
                                    created_ms: series.start_ms,
                                },
                            );
                            added += 1;
                        }
                        None => refused += 1,
                    }
                }
            }
            if state.series.is_empty() {
                inner.families.remove(&family.name);
            }
            inner.series += added;
        }
        let held = inner.series;
        self.totals.commit(staged);
        let warn = refused > 0 && !inner.warned_full;
        if refused > 0 {
            inner.warned_full = true;
        }
        drop(inner);
        if warn {
            tracing::warn!(exporter = %self.name, max_series = self.max_series, refused, "the scrape endpoint holds its most series; new series are refused until old ones go stale");
        }
        if let Some(m) = self.metrics.get() {
            let labels = ExporterLabels {
                exporter: self.name.clone(),
            };
            m.scrape_series.get_or_create(&labels).set(held as i64);
            if refused > 0 {
                m.scrape_series_refused
                    .get_or_create(&labels)
                    .inc_by(refused);
            }
        }
        Ok(Delivered {
            requests: 1,
            points,
            rejected_points: 0,
            bytes: 0,
            skipped: 0,
        })
    }

    /// Series held now (after dropping stale ones).
    pub fn series_count(&self) -> usize {
        let mut inner = self.lock();
        prune(&mut inner, Instant::now(), self.stale_after);
        inner.series
    }

    /// The exposition, and its content type: OpenMetrics when `accept`
    /// asks for it, else the Prometheus text format.
    pub fn render(&self, accept: &str) -> (String, &'static str) {
        let openmetrics = accept.contains("application/openmetrics-text");
        let mut inner = self.lock();
        prune(&mut inner, Instant::now(), self.stale_after);
        let text = if openmetrics {
            render_openmetrics(&inner)
        } else {
            render_text(&inner)
        };
        let held = inner.series;
        drop(inner);
        if let Some(m) = self.metrics.get() {
            m.scrape_series
                .get_or_create(&ExporterLabels {
                    exporter: self.name.clone(),
                })
                .set(held as i64);
        }
        (
            text,
            if openmetrics {
                OPENMETRICS_CONTENT_TYPE
            } else {
                TEXT_CONTENT_TYPE
            },
        )
    }
}

/// The sample names a family is exposed under.
fn sample_names(name: &str, family_type: FamilyType) -> Vec<String> {
    if family_type == FamilyType::Histogram {
        HISTOGRAM_SUFFIXES
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect()
    } else {
        vec![name.to_string()]
    }
}

const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Why `owner` may not serve `family` next to what is held, if it may not:
/// a family of that name served for another MetricsExporter, or under
/// another type, or another family exposed under one of its sample names.
fn clash(inner: &Inner, owner: &str, family: &super::series::Family) -> Option<String> {
    let describe = |name: &str, f: &FamilyState| {
        format!(
            "Prometheus family `{name}` (a {}) is served for MetricsExporter {}",
            f.family_type.as_str(),
            f.owner
        )
    };
    if let Some(held) = inner.families.get(&family.name) {
        // Every MetricsExporter describes its resource in `target_info`:
        // the family is everyone's, its series apart by their labels.
        let shared = family.name == TARGET_INFO
            && held.family_type == FamilyType::Gauge
            && family.family_type == FamilyType::Gauge;
        if held.owner != owner && !shared {
            return Some(format!(
                "{}; MetricsExporter {owner} cannot serve a family of that name too (a {}): rename its metric or give it another scrape exporter",
                describe(&family.name, held),
                family.family_type.as_str()
            ));
        }
        if held.family_type != family.family_type {
            return Some(format!(
                "Prometheus family `{}` is already served as a {} for MetricsExporter {owner}; it cannot also be a {}",
                family.name,
                held.family_type.as_str(),
                family.family_type.as_str()
            ));
        }
        return None;
    }
    for sample in sample_names(&family.name, family.family_type) {
        let bases = HISTOGRAM_SUFFIXES
            .iter()
            .filter_map(|s| sample.strip_suffix(s));
        for other in std::iter::once(sample.as_str()).chain(bases) {
            if let Some(held) = inner.families.get(other)
                && sample_names(other, held.family_type).contains(&sample)
            {
                return Some(format!(
                    "{}, whose samples include `{sample}`; MetricsExporter {owner} cannot serve family `{}` (a {}) beside it",
                    describe(other, held),
                    family.name,
                    family.family_type.as_str()
                ));
            }
        }
    }
    None
}

fn prune(inner: &mut Inner, now: Instant, stale_after: Duration) {
    let mut removed = 0;
    inner.families.retain(|_, f| {
        let before = f.series.len();
        f.series
            .retain(|_, l| now.duration_since(l.updated) < stale_after);
        removed += before - f.series.len();
        !f.series.is_empty()
    });
    inner.series -= removed;
    if removed > 0 {
        inner.warned_full = false;
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, openmetrics: bool) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn write_sample(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    l: &Latest,
    openmetrics: bool,
) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_float(l.value));
    out.push(' ');
    if openmetrics {
        // Seconds, exact to the millisecond.
        let sign = if l.timestamp_ms < 0 { "-" } else { "" };
        let ms = l.timestamp_ms.unsigned_abs();
        let _ = write!(out, "{sign}{}.{:03}", ms / 1000, ms % 1000);
    } else {
        let _ = write!(out, "{}", l.timestamp_ms);
    }
    out.push('\n');
}

/// A sample to write: its name, labels and latest point.
type SampleRef<'a> = (&'a String, &'a Vec<(String, String)>, &'a Latest);

/// A family's samples in exposition order: for a histogram, each label set
/// together (buckets by rising `le`, then `_count`, then `_sum`), as
/// OpenMetrics requires; otherwise as stored.
fn ordered<'a>(name: &str, f: &'a FamilyState) -> Vec<SampleRef<'a>> {
    let mut out: Vec<_> = f.series.iter().map(|((s, l), v)| (s, l, v)).collect();
    if f.family_type == FamilyType::Histogram {
        let rank = |sample: &str| -> u8 {
            match sample.strip_prefix(name) {
                Some("_bucket") => 0,
                Some("_count") => 1,
                _ => 2,
            }
        };
        let le = |labels: &[(String, String)]| -> f64 {
            labels
                .iter()
                .find(|(k, _)| k == super::series::LE)
                .map(|(_, v)| {
                    if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse().unwrap_or(f64::NAN)
                    }
                })
                .unwrap_or(0.0)
        };
        let base = |labels: &[(String, String)]| -> Vec<(String, String)> {
            labels
                .iter()
                .filter(|(k, _)| k != super::series::LE)
                .cloned()
                .collect()
        };
        out.sort_by(|a, b| {
            base(a.1)
                .cmp(&base(b.1))
                .then(rank(a.0).cmp(&rank(b.0)))
                .then(le(a.1).total_cmp(&le(b.1)))
        });
    }
    out
}

fn render_text(inner: &Inner) -> String {
    let mut out = String::new();
    for (name, f) in &inner.families {
        if !f.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&f.help, false));
        }
        let _ = writeln!(out, "# TYPE {name} {}", f.family_type.as_str());
        for (sample, labels, l) in ordered(name, f) {
            write_sample(&mut out, sample, labels, l, false);
        }
    }
    out
}

fn render_openmetrics(inner: &Inner) -> String {
    let mut out = String::new();
    for (name, f) in &inner.families {
        // OpenMetrics names a counter family without `_total`, which its
        // samples carry; a counter without it can only be `unknown`.
        let (family, kind) = match f.family_type {
            FamilyType::Counter => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name.as_str(), "unknown"),
            },
            other => (name.as_str(), other.as_str()),
        };
        let _ = writeln!(out, "# TYPE {family} {kind}");
        if !f.unit.is_empty() && family.ends_with(&format!("_{}", f.unit)) {
            let _ = writeln!(out, "# UNIT {family} {}", f.unit);
        }
        if !f.help.is_empty() {
            let _ = writeln!(out, "# HELP {family} {}", escape_help(&f.help, true));
        }
        for (sample, labels, l) in ordered(name, f) {
            write_sample(&mut out, sample, labels, l, true);
            if kind == "counter"
                && let Some(created_ms) = l.created_ms
            {
                let created = Latest {
                    value: created_ms as f64 / 1000.0,
                    ..*l
                };
                write_sample(
                    &mut out,
                    &format!("{family}_created"),
                    labels,
                    &created,
                    true,
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture;

    fn store(max_series: usize, stale_after: Duration) -> ScrapeStore {
        let mut config = ScrapeConfig {
            max_series,
            stale_after,
            ..ScrapeConfig::default()
        };
        config.naming.scope_labels = false;
        ScrapeStore::new("scrape", &config)
    }

    #[test]
    fn latest_points_in_both_formats() {
        let s = store(1000, Duration::from_secs(60));
        s.update(&Resource::default_host(), &fixture::output())
            .unwrap();
        let (text, ct) = s.render("text/plain");
        assert_eq!(ct, TEXT_CONTENT_TYPE);
        let t = fixture::T / 1_000_000;
        assert!(
            text.contains("# HELP requests_total Requests served\n# TYPE requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "requests_total{{code=\"200\",host=\"web-1\",ok=\"true\",ratio=\"0.25\"}} 10 {t}\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("latency_seconds_bucket{{code=\"200\",host=\"web-1\",le=\"+Inf\",ok=\"true\",ratio=\"0.25\"}} 6 {t}\n")), "{text}");
        assert!(
            text.contains(&format!(
                "bytes_delta{{host=\"web-2\",region=\"eastus\"}} 1.5 {t}\n"
            )),
            "a delta sum is served as its running total: {text}"
        );
        let (om, ct) = s.render("application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(om.contains("# TYPE requests counter\n"), "{om}");
        assert!(
            om.contains("# TYPE latency_seconds histogram\n# UNIT latency_seconds seconds\n"),
            "{om}"
        );
        assert!(
            om.contains(&format!("}} 10 {}.{:03}\n", t / 1000, t % 1000)),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn series_are_bounded_and_go_stale() {
        let s = store(3, Duration::from_millis(200));
        s.update(&Resource::default_host(), &fixture::output())
            .unwrap();
        assert_eq!(s.series_count(), 3, "new series past the limit are refused");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(s.series_count(), 0, "stale series are dropped");
        assert_eq!(s.render("").0, "");
    }

    #[test]
    fn a_newer_point_replaces_an_older_one_and_not_the_other_way() {
        let s = store(1000, Duration::from_secs(60));
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("g", 2_000_000, 1)];
        s.update(&Resource::default_host(), &out).unwrap();
        out.metrics = vec![fixture::gauge("g", 1_000_000, 1)];
        s.update(&Resource::default_host(), &out).unwrap();
        let (text, _) = s.render("");
        assert!(
            text.contains("g{code=\"200\",host=\"web-1\",ok=\"true\",ratio=\"0.25\"} 0 2\n"),
            "{text}"
        );
    }

    #[test]
    fn a_histogram_is_written_label_set_by_label_set_in_bound_order() {
        let s = store(1000, Duration::from_secs(60));
        s.update(&Resource::default_host(), &fixture::output())
            .unwrap();
        let (om, _) = s.render("application/openmetrics-text");
        let lines: Vec<&str> = om
            .lines()
            .filter(|l| l.starts_with("latency_seconds"))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let web1: Vec<&&str> = lines.iter().filter(|l| l.contains("web-1")).collect();
        assert_eq!(web1.len(), 5, "{om}");
        assert!(
            web1[0].contains("le=\"0.1\"")
                && web1[1].contains("le=\"1\"")
                && web1[2].contains("le=\"+Inf\""),
            "{web1:?}"
        );
        assert!(
            web1[3].starts_with("latency_seconds_count")
                && web1[4].starts_with("latency_seconds_sum"),
            "{web1:?}"
        );
        // Each label set's lines together.
        let first = lines.iter().position(|l| l.contains("web-1")).unwrap();
        assert!(
            lines[first..first + 5].iter().all(|l| l.contains("web-1")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_histogram_is_taken_whole_or_not_at_all() {
        // Room for 4 series: web-1's 5 do not fit, the next set's 4 do, then
        // web-2's 3 do not.
        let s = store(4, Duration::from_secs(60));
        let mut out = fixture::output();
        out.metrics.retain(|m| m.name == "latency");
        s.update(&Resource::default_host(), &out).unwrap();
        let (text, _) = s.render("");
        assert!(!text.contains("web-1"), "{text}");
        assert!(
            text.contains("latency_seconds_count 0 "),
            "the set without labels (4 series) fits: {text}"
        );
        assert_eq!(s.series_count(), 4);
    }

    #[test]
    fn a_family_belongs_to_one_metrics_exporter_and_a_clash_refuses_only_the_newcomer() {
        let s = store(1000, Duration::from_secs(60));
        let host = Resource::default_host();
        let mut a = fixture::output();
        a.metrics = vec![fixture::gauge("x_total", 1_000_000, 1)];
        s.update_for("team-a/a", &host, &a).unwrap();
        // Team B: a counter `x` (served as `x_total`) and a gauge `y`.
        // Refused whole: no `y` either.
        let mut counter = fixture::gauge("x", 2_000_000, 5);
        let crate::wit::MetricData::Gauge(points) = counter.data else {
            unreachable!("a gauge")
        };
        counter.data = crate::wit::MetricData::Sum(crate::wit::SumData {
            points,
            temporality: crate::wit::Temporality::Cumulative,
            monotonic: true,
        });
        let mut b = fixture::output();
        b.metrics = vec![fixture::gauge("y", 2_000_000, 2), counter];
        let e = s.update_for("team-b/b", &host, &b).unwrap_err().to_string();
        assert!(
            e.contains("family `x_total` (a gauge)")
                && e.contains("MetricsExporter team-a/a")
                && e.contains("MetricsExporter team-b/b")
                && e.contains("(a counter)"),
            "{e}"
        );
        let (text, _) = s.render("");
        assert!(
            !text.contains("\ny{"),
            "nothing of B's update was taken: {text}"
        );
        assert!(
            text.contains("\nx_total{") && text.contains("} 0 1\n"),
            "A's family unchanged: {text}"
        );
        // Same name and type from B: still A's family.
        let mut b2 = fixture::output();
        b2.metrics = vec![fixture::gauge("x_total", 3_000_000, 9)];
        assert!(s.update_for("team-b/b", &host, &b2).is_err());
        // B on its own names is fine, and A keeps updating its own.
        let mut b3 = fixture::output();
        b3.metrics = vec![fixture::gauge("y", 3_000_000, 2)];
        s.update_for("team-b/b", &host, &b3).unwrap();
        a.metrics = vec![fixture::gauge("x_total", 4_000_000, 1)];
        s.update_for("team-a/a", &host, &a).unwrap();
    }

    #[test]
    fn a_sample_name_of_another_family_clashes_too() {
        let s = store(1000, Duration::from_secs(60));
        let host = Resource::default_host();
        let mut a = fixture::output();
        a.metrics.retain(|m| m.name == "latency");
        s.update_for("team-a/a", &host, &a).unwrap();
        let mut b = fixture::output();
        b.metrics = vec![fixture::gauge("latency_seconds_count", 1_000_000, 1)];
        let e = s.update_for("team-b/b", &host, &b).unwrap_err().to_string();
        assert!(
            e.contains("family `latency_seconds`") && e.contains("latency_seconds_count"),
            "{e}"
        );
    }

    fn delta_counter(time_ns: u64, value: i64) -> Output {
        let mut out = fixture::output();
        let mut m = fixture::gauge("sent", time_ns, 1);
        let crate::wit::MetricData::Gauge(mut points) = m.data else {
            unreachable!("a gauge")
        };
        points.values = crate::wit::NumberValues::Ints(vec![value]);
        points.start_times = vec![time_ns - 1_000_000];
        m.data = crate::wit::MetricData::Sum(crate::wit::SumData {
            points,
            temporality: crate::wit::Temporality::Delta,
            monotonic: true,
        });
        out.metrics = vec![m];
        out
    }

    #[test]
    fn delta_sums_are_served_as_running_totals_with_their_start() {
        let s = store(1000, Duration::from_secs(60));
        let host = Resource::default_host();
        s.update_for("ns/a", &host, &delta_counter(2_000_000_000, 3))
            .unwrap();
        s.update_for("ns/a", &host, &delta_counter(3_000_000_000, 4))
            .unwrap();
        let (text, _) = s.render("");
        let labels = "{code=\"200\",host=\"web-1\",ok=\"true\",ratio=\"0.25\"}";
        assert!(
            text.contains(&format!(
                "# TYPE sent_total counter\nsent_total{labels} 7 3000\n"
            )),
            "{text}"
        );
        let (om, _) = s.render("application/openmetrics-text");
        assert!(
            om.contains(&format!(
                "sent_total{labels} 7 3.000\nsent_created{labels} 1.999 3.000\n"
            )),
            "the start of the first delta: {om}"
        );
    }

    #[test]
    fn a_refused_update_does_not_count_its_deltas() {
        let s = store(1000, Duration::from_secs(60));
        let host = Resource::default_host();
        s.update_for("ns/a", &host, &delta_counter(2_000_000_000, 3))
            .unwrap();
        // B's update names A's family: refused whole, B's deltas too.
        let mut b = delta_counter(3_000_000_000, 100);
        b.metrics
            .push(fixture::gauge("sent_total", 3_000_000_000, 1));
        let mut other = delta_counter(3_000_000_000, 5);
        other.metrics[0].name = "other".into();
        b.metrics.push(other.metrics.remove(0));
        assert!(s.update_for("ns/b", &host, &b).is_err());
        let mut b = delta_counter(4_000_000_000, 5);
        b.metrics[0].name = "other".into();
        s.update_for("ns/b", &host, &b).unwrap();
        let (text, _) = s.render("");
        assert!(
            text.contains("\nother_total{") && text.contains("} 5 4000\n"),
            "{text}"
        );
        assert!(text.contains("} 3 2000\n"), "A's total unchanged: {text}");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = String::new();
        escape_label_value("a\"b\\c\nd", &mut out);
        assert_eq!(out, "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz\"", false), "x\\\\y\\nz\"");
    }
}
