//! OTLP/JSON on standard output, one request per line: for looking at what a
//! transform produces, or for piping into another tool.

use std::io::Write;

use super::Resource;
use super::config::StdoutConfig;
use super::deliver::MAX_REQUEST_BYTES;
use super::deliver::{Delivered, ErrorKind, ExportError};
use super::otlp_json::encode_json;
use super::split::split_by_size;
use crate::wit::Output;

pub struct StdoutSink {
    name: String,
    max_points: usize,
}

impl StdoutSink {
    pub fn new(name: &str, config: &StdoutConfig) -> StdoutSink {
        StdoutSink {
            name: name.to_string(),
            max_points: config.max_points_per_request,
        }
    }

    pub fn max_points(&self) -> usize {
        self.max_points
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn send(&self, resource: &Resource, output: &Output) -> Result<Delivered, ExportError> {
        self.send_from(resource, output, 0)
    }

    /// Leaves out the first `skip` requests (see `Sink::send_from`).
    pub fn send_from(
        &self,
        resource: &Resource,
        output: &Output,
        skip: usize,
    ) -> Result<Delivered, ExportError> {
        self.write_lines(resource, output, skip, |line| {
            // Held for one whole line, so lines of exporters writing at the
            // same time do not interleave.
            let mut out = std::io::stdout().lock();
            out.write_all(line)?;
            out.flush()
        })
    }

    /// Hands each request, as one line ending in `\n`, to `write`.
    pub fn write_lines(
        &self,
        resource: &Resource,
        output: &Output,
        skip: usize,
        mut write: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Delivered, ExportError> {
        let mut delivered = Delivered::default();
        // Lines are bounded like network requests, so one line never holds
        // what a guest's output expands to at once.
        let requests = split_by_size(output, resource, self.max_points, MAX_REQUEST_BYTES)
            .map_err(|e| ExportError::new(&self.name, ErrorKind::TooLarge { bytes: e.bytes }))?;
        delivered.skipped = skip.min(requests.len());
        for slices in requests.into_iter().skip(skip) {
            let mut line = encode_json(resource, output, &slices).into_bytes();
            line.push(b'\n');
            if let Err(e) = write(&line) {
                return Err(ExportError {
                    exporter: self.name.clone(),
                    kind: ErrorKind::Io(format!("stdout: {e}")),
                    request: u32::try_from(delivered.requests + 1).ok(),
                    delivered,
                });
            }
            delivered.requests += 1;
            delivered.points += slices.iter().map(|s| s.end - s.start).sum::<usize>();
            delivered.bytes += line.len() as u64;
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture;

    #[test]
    fn one_json_request_per_line() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, 5), fixture::gauge("b", 0, 3)];
        let sink = StdoutSink::new(
            "console",
            &StdoutConfig {
                max_points_per_request: 3,
            },
        );
        let mut written = Vec::new();
        let delivered = sink
            .write_lines(&Resource::default_host(), &out, 0, |line| {
                written.extend_from_slice(line);
                Ok(())
            })
            .expect("writes");
        let text = String::from_utf8(written).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        let mut points = 0;
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            for m in v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                .as_array()
                .expect("metrics")
            {
                points += m["gauge"]["dataPoints"].as_array().expect("points").len();
            }
        }
        assert_eq!(points, 8);
        assert_eq!(
            delivered,
            Delivered {
                requests: 3,
                points: 8,
                rejected_points: 0,
                bytes: text.len() as u64,
                skipped: 0,
            }
        );
    }

    #[test]
    fn a_failed_write_reports_what_went_before() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, 5)];
        let sink = StdoutSink::new(
            "console",
            &StdoutConfig {
                max_points_per_request: 2,
            },
        );
        let mut calls = 0;
        let e = sink
            .write_lines(&Resource::default_host(), &out, 0, |_| {
                calls += 1;
                if calls == 2 {
                    Err(std::io::ErrorKind::BrokenPipe.into())
                } else {
                    Ok(())
                }
            })
            .expect_err("second write fails");
        assert_eq!(e.request, Some(2));
        assert_eq!((e.delivered.requests, e.delivered.points), (1, 2));
        assert_eq!(e.reason(), "io");
    }
}
