//! OTLP/JSON on standard output, one request per line: for looking at what a
//! transform produces, or for piping into another tool.

use std::io::Write;

use super::Resource;
use super::config::StdoutConfig;
use super::deliver::MAX_REQUEST_BYTES;
use super::deliver::{Accepted, Delivered, ErrorKind, ExportError};
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

    /// Leaves out the first `skip` requests (see `Sink::send_from`), and
    /// tells `accepted` after each line written.
    pub async fn send_with(
        &self,
        resource: &Resource,
        output: &Output,
        skip: usize,
        accepted: &mut dyn Accepted,
    ) -> Result<Delivered, ExportError> {
        let mut lines = self.lines(resource, output, skip)?;
        let mut delivered = Delivered {
            skipped: lines.skipped,
            ..Delivered::default()
        };
        while let Some((points, line)) = lines.next() {
            let written = {
                // Held for one whole line, so lines of exporters writing at
                // the same time do not interleave.
                let mut out = std::io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush())
            };
            let fail = |kind, delivered: Delivered| ExportError {
                exporter: self.name.clone(),
                kind,
                request: u32::try_from(delivered.requests + 1).ok(),
                delivered,
            };
            if let Err(e) = written {
                return Err(fail(ErrorKind::Io(format!("stdout: {e}")), delivered));
            }
            delivered.requests += 1;
            delivered.points += points;
            delivered.bytes += line.len() as u64;
            if let Err(kind) = accepted
                .accepted(delivered.skipped + delivered.requests)
                .await
            {
                return Err(fail(kind, delivered));
            }
        }
        Ok(delivered)
    }

    /// The requests of `output` after the first `skip`, as lines.
    fn lines<'a>(
        &'a self,
        resource: &'a Resource,
        output: &'a Output,
        skip: usize,
    ) -> Result<Lines<'a>, ExportError> {
        // Lines are bounded like network requests, so one line never holds
        // what a guest's output expands to at once.
        let requests = split_by_size(output, resource, self.max_points, MAX_REQUEST_BYTES)
            .map_err(|e| ExportError::new(&self.name, ErrorKind::TooLarge { bytes: e.bytes }))?;
        let skipped = skip.min(requests.len());
        Ok(Lines {
            resource,
            output,
            requests: requests.into_iter().skip(skipped),
            skipped,
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
        let mut lines = self.lines(resource, output, skip)?;
        let mut delivered = Delivered {
            skipped: lines.skipped,
            ..Delivered::default()
        };
        while let Some((points, line)) = lines.next() {
            if let Err(e) = write(&line) {
                return Err(ExportError {
                    exporter: self.name.clone(),
                    kind: ErrorKind::Io(format!("stdout: {e}")),
                    request: u32::try_from(delivered.requests + 1).ok(),
                    delivered,
                });
            }
            delivered.requests += 1;
            delivered.points += points;
            delivered.bytes += line.len() as u64;
        }
        Ok(delivered)
    }
}

struct Lines<'a> {
    resource: &'a Resource,
    output: &'a Output,
    requests: std::iter::Skip<std::vec::IntoIter<Vec<super::MetricSlice>>>,
    skipped: usize,
}

impl Lines<'_> {
    /// The next line's point count and bytes (ending in `\n`).
    fn next(&mut self) -> Option<(usize, Vec<u8>)> {
        let slices = self.requests.next()?;
        let mut line = encode_json(self.resource, self.output, &slices).into_bytes();
        line.push(b'\n');
        Some((slices.iter().map(|s| s.end - s.start).sum(), line))
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
