//! Test guest that misbehaves on request. Its configuration names what to
//! do: a JSON string (`"spin"`) or a transform block with a `behaviour` key
//! (`{"behaviour": "shared-attribute:1048576:10000"}`); numbers after the
//! name, separated by `:`, size the attack. The host must survive every one
//! of these with a typed error for the batch and bounded memory.

use kusto_metrics_guest::{
    Attribute, AttributeValue, Batch, ConfigError, HistogramData, HistogramPoint, Metric,
    MetricData, NumberPoints, NumberValues, Output, Requirements, SkipCount, Temporality,
    TransformError,
};

// Freeing would trip over the aliased buffers below; an instance lives for
// one batch anyway.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: kusto_metrics_guest::BumpAllocator = kusto_metrics_guest::BumpAllocator::new();

struct Hostile;

fn gauge(name: String, points: usize, attribute_set: u32) -> Metric {
    Metric {
        name,
        description: String::new(),
        unit: String::new(),
        data: MetricData::Gauge(NumberPoints {
            attribute_sets: vec![attribute_set; points],
            start_times: Vec::new(),
            times: vec![1; points],
            values: NumberValues::Ints(vec![1; points]),
        }),
    }
}

fn output(metrics: Vec<Metric>, sets: usize) -> Output {
    Output {
        strings: Vec::new(),
        attributes: Vec::new(),
        attribute_set_ends: vec![0; sets],
        metrics,
        skipped: Vec::new(),
    }
}

/// `count` strings that all point at one buffer of `bytes` bytes, so the
/// guest holds `bytes` while the host would lift `count × bytes`.
fn aliased_strings(bytes: usize, count: usize) -> Vec<String> {
    let buffer = "x".repeat(bytes);
    let (ptr, len) = (buffer.as_ptr() as *mut u8, buffer.len());
    std::mem::forget(buffer);
    (0..count)
        // SAFETY: deliberately not: every String aliases the one leaked
        // buffer, which is never freed or written (the allocator never
        // frees), and the instance ends after this call.
        .map(|_| unsafe { String::from_raw_parts(ptr, len, len) })
        .collect()
}

/// `count` lists of `len` bucket counts sharing one buffer.
fn aliased_buckets(len: usize, count: usize) -> Vec<Vec<u64>> {
    let buffer = vec![1u64; len];
    let (ptr, len) = (buffer.as_ptr() as *mut u64, buffer.len());
    std::mem::forget(buffer);
    // SAFETY: as in `aliased_strings`.
    (0..count)
        .map(|_| unsafe { Vec::from_raw_parts(ptr, len, len) })
        .collect()
}

/// The behaviour and its numeric arguments.
fn behaviour(config: &str) -> (String, Vec<usize>) {
    let text = match config.find("\"behaviour\"") {
        Some(at) => config[at + "\"behaviour\"".len()..]
            .trim_start_matches([' ', ':'])
            .trim_start_matches('"')
            .split('"')
            .next()
            .unwrap_or(""),
        None => config.trim().trim_matches('"'),
    };
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or("").to_string();
    (name, parts.filter_map(|p| p.parse().ok()).collect())
}

fn arg(args: &[usize], i: usize, default: usize) -> usize {
    args.get(i).copied().unwrap_or(default)
}

impl kusto_metrics_guest::Guest for Hostile {
    fn validate(config: String) -> Result<Requirements, ConfigError> {
        let (name, args) = behaviour(&config);
        match name.as_str() {
            "bad-config" => Err(ConfigError::field("behaviour", "refused on purpose")),
            "huge-config-error" => {
                let big = "e".repeat(arg(&args, 0, 1 << 20));
                Err(ConfigError::field(&big, big.clone()))
            }
            _ => Ok(Requirements {
                columns: Vec::new(),
                event_time_column: None,
            }),
        }
    }

    fn transform(config: String, batch: Batch) -> Result<Output, TransformError> {
        let (name, args) = behaviour(&config);
        let rows = batch.row_count as usize;
        match name.as_str() {
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "hog" => {
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                loop {
                    chunks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "trap" => panic!("deliberate panic in the guest"),
            "empty" => Ok(output(Vec::new(), 0)),
            "oversize" => Ok(output(vec![gauge("big".into(), 100_000, 0)], 1)),
            "malformed" => Ok(output(vec![gauge("bad".into(), 3, 7)], 1)),
            "reject" => Err(TransformError {
                column: Some("metric_value".into()),
                row: Some(41),
                message: "refused on purpose".into(),
            }),
            "huge-error" => {
                let big = "e".repeat(arg(&args, 0, 1 << 20));
                Err(TransformError {
                    column: Some(big.clone()),
                    row: Some(0),
                    message: big,
                })
            }
            "log-flood" => {
                for i in 0..arg(&args, 0, 10_000) {
                    kusto_metrics_guest::log::info(&format!("line {i}"));
                }
                Ok(output(vec![gauge("logged".into(), rows, 0)], 1))
            }
            "big-log" => {
                let line = "l".repeat(arg(&args, 0, 1 << 20));
                for _ in 0..arg(&args, 1, 100) {
                    kusto_metrics_guest::log::warn(&line);
                }
                Ok(output(vec![gauge("logged".into(), rows, 0)], 1))
            }
            // One large attribute value in the string table, shared by many
            // points: small to lift, huge once every point carries it.
            "shared-attribute" => {
                let (bytes, points) = (arg(&args, 0, 1 << 20), arg(&args, 1, 10_000));
                let mut out = output(vec![gauge("shared".into(), points, 0)], 0);
                out.strings = vec!["k".into(), "v".repeat(bytes)];
                out.attributes = vec![Attribute {
                    key: 0,
                    value: AttributeValue::Str(1),
                }];
                out.attribute_set_ends = vec![1];
                Ok(out)
            }
            // The string table: many strings aliasing one buffer.
            "aliased-strings" => {
                let (bytes, count) = (arg(&args, 0, 32 << 20), arg(&args, 1, 200_000));
                let mut out = output(vec![gauge("aliased".into(), 1, 0)], 1);
                out.strings = aliased_strings(bytes, count);
                Ok(out)
            }
            // Metric names aliasing one buffer.
            "aliased-names" => {
                let (bytes, count) = (arg(&args, 0, 32 << 20), arg(&args, 1, 200_000));
                let metrics = aliased_strings(bytes, count)
                    .into_iter()
                    .map(|name| gauge(name, 1, 0))
                    .collect();
                Ok(output(metrics, 1))
            }
            // Histogram bucket lists aliasing one buffer.
            "aliased-buckets" => {
                let (len, count) = (arg(&args, 0, 4 << 20), arg(&args, 1, 10_000));
                let points = aliased_buckets(len, count)
                    .into_iter()
                    .map(|bucket_counts| HistogramPoint {
                        attribute_set: 0,
                        start_time: 1,
                        time: 2,
                        count: 1,
                        sum: None,
                        min: None,
                        max: None,
                        // Left empty: the bounds would be real memory.
                        explicit_bounds: Vec::new(),
                        bucket_counts,
                    })
                    .collect();
                Ok(output(
                    vec![Metric {
                        name: "buckets".into(),
                        description: String::new(),
                        unit: String::new(),
                        data: MetricData::Histogram(HistogramData {
                            points,
                            temporality: Temporality::Delta,
                        }),
                    }],
                    1,
                ))
            }
            // A distinct reason for every skip count.
            "skip-reasons" => {
                let (count, bytes) = (arg(&args, 0, 1_000_000), arg(&args, 1, 0));
                let mut out = output(vec![gauge("ok".into(), rows, 0)], 1);
                out.strings = (0..count)
                    .map(|i| {
                        let mut reason = String::with_capacity(bytes.max(16));
                        let _ =
                            std::fmt::Write::write_fmt(&mut reason, format_args!("reason-{i}-"));
                        while reason.len() < bytes {
                            reason.push('r');
                        }
                        reason
                    })
                    .collect();
                out.skipped = (0..count as u32)
                    .map(|i| SkipCount {
                        reason: i,
                        count: 1,
                        first_row: 0,
                    })
                    .collect();
                Ok(out)
            }
            // Hits the memory limit when column `v` holds the poison value,
            // and otherwise gives one point per row carrying `v`.
            "poison" => {
                let poison = arg(&args, 0, 0) as i64;
                let values = batch
                    .columns
                    .iter()
                    .find(|c| c.name == "v")
                    .and_then(|c| match &c.values {
                        kusto_metrics_guest::ColumnValues::Longs(v) => Some(v.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                if values.contains(&poison) {
                    let mut chunks: Vec<Vec<u8>> = Vec::new();
                    loop {
                        chunks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                    }
                }
                let n = values.len();
                let mut metric = gauge("v".into(), n, 0);
                if let MetricData::Gauge(p) = &mut metric.data {
                    p.values = NumberValues::Ints(values);
                }
                Ok(output(vec![metric], 1))
            }
            _ => Ok(output(vec![gauge("ok".into(), rows, 0)], 1)),
        }
    }
}

kusto_metrics_guest::export!(Hostile);
