//! Test guest that misbehaves on request: its configuration is the name of
//! what to do. The host must survive every one of these.

use kusto_metrics_guest::{
    Batch, ConfigError, Metric, MetricData, NumberPoints, NumberValues, Output, Requirements,
    TransformError,
};

struct Hostile;

fn gauge(name: &str, points: usize, attribute_set: u32) -> Metric {
    Metric {
        name: name.to_string(),
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

impl kusto_metrics_guest::Guest for Hostile {
    fn validate(config: String) -> Result<Requirements, ConfigError> {
        match config.trim_matches('"') {
            "bad-config" => Err(ConfigError::field("behaviour", "refused on purpose")),
            _ => Ok(Requirements {
                columns: Vec::new(),
            }),
        }
    }

    fn transform(config: String, batch: Batch) -> Result<Output, TransformError> {
        match config.trim_matches('"') {
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
            "oversize" => Ok(output(vec![gauge("big", 100_000, 0)], 1)),
            "malformed" => Ok(output(vec![gauge("bad", 3, 7)], 1)),
            "reject" => Err(TransformError {
                column: Some("metric_value".into()),
                row: Some(41),
                message: "refused on purpose".into(),
            }),
            "log-flood" => {
                for i in 0..10_000 {
                    kusto_metrics_guest::log::info(&format!("line {i}"));
                }
                Ok(output(
                    vec![gauge("logged", batch.row_count as usize, 0)],
                    1,
                ))
            }
            _ => Ok(output(vec![gauge("ok", batch.row_count as usize, 0)], 1)),
        }
    }
}

kusto_metrics_guest::export!(Hostile);
