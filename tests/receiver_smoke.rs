//! The OTLP receiver the end-to-end tests use (tests/servers/otlp_receiver.py)
//! records what it is sent and fails on demand. Needs `scripts/setup.sh`.

mod common;

use std::time::Duration;

use common::receiver::{Receiver, post_metrics};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// A small OTLP/JSON request, built by hand: one gauge point and one sum point.
fn otlp_json(value: i64) -> String {
    json!({
        "resourceMetrics": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "receiver-smoke"}}
            ]},
            "scopeMetrics": [{
                "scope": {"name": "smoke", "version": "v1"},
                "metrics": [
                    {
                        "name": "queue_depth",
                        "unit": "1",
                        "gauge": {"dataPoints": [{
                            "timeUnixNano": "1750846500000000000",
                            "asInt": value.to_string(),
                            "attributes": [{"key": "region", "value": {"stringValue": "westus"}}]
                        }]}
                    },
                    {
                        "name": "requests_total",
                        "sum": {
                            "aggregationTemporality": 2,
                            "isMonotonic": true,
                            "dataPoints": [{"timeUnixNano": "1750846500000000000", "asDouble": 12.5}]
                        }
                    }
                ]
            }]
        }]
    })
    .to_string()
}

#[test]
fn records_an_otlp_json_request() {
    let receiver = Receiver::start();
    // Beyond 2^53, to see 64-bit integers survive as strings.
    let response = post_metrics(
        &receiver.http_addr(),
        "application/json",
        otlp_json(9_007_199_254_740_993).as_bytes(),
    )
    .expect("POST /v1/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let answer: Value = serde_json::from_slice(&response.body).expect("JSON answer");
    assert_eq!(answer, json!({}));

    let points = receiver.wait_for_points(2, WAIT);
    assert_eq!(
        points,
        vec![
            json!({
                "metric": "queue_depth",
                "timeUnixNano": "1750846500000000000",
                "asInt": "9007199254740993",
                "attributes": [{"key": "region", "value": {"stringValue": "westus"}}]
            }),
            json!({
                "metric": "requests_total",
                "timeUnixNano": "1750846500000000000",
                "asDouble": 12.5
            }),
        ]
    );

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded["transport"], "http");
    assert_eq!(recorded["encoding"], "json");
    assert_eq!(recorded["gzip"], false);
    assert_eq!(recorded["headers"]["content-type"], "application/json");
    let sum = &recorded["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]["sum"];
    assert_eq!(sum["aggregationTemporality"], 2);
    assert_eq!(sum["isMonotonic"], true);
}

#[test]
fn fail_next_refuses_then_accepts() {
    let receiver = Receiver::start();
    receiver.fail_next(1, 503, Some(1));

    let refused = post_metrics(
        &receiver.http_addr(),
        "application/json",
        otlp_json(1).as_bytes(),
    )
    .expect("POST /v1/metrics");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));

    let accepted = post_metrics(
        &receiver.http_addr(),
        "application/json",
        otlp_json(2).as_bytes(),
    )
    .expect("POST /v1/metrics");
    assert_eq!(accepted.status, 200, "{}", accepted.text());

    // Only the accepted request was recorded.
    let points = receiver.wait_for_points(2, WAIT);
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["asInt"], "2");
    assert_eq!(receiver.stats()["refused"], 1);
    assert_eq!(receiver.stats()["accepted"], 1);
}

#[test]
fn malformed_bodies_get_400_and_are_not_recorded() {
    let receiver = Receiver::start();
    let response = post_metrics(
        &receiver.http_addr(),
        "application/json",
        b"{\"resourceMetrics\": 7}",
    )
    .expect("POST /v1/metrics");
    assert_eq!(response.status, 400);
    let response = post_metrics(
        &receiver.http_addr(),
        "application/x-protobuf",
        b"\xff\xff\xff",
    )
    .expect("POST /v1/metrics");
    assert_eq!(response.status, 400);
    assert!(
        response.text().contains("cannot decode"),
        "{}",
        response.text()
    );
    assert!(receiver.requests().is_empty());
}

#[test]
fn an_answer_lost_then_the_receiver_down_and_up() {
    let mut receiver = Receiver::start();
    receiver.accept_then_drop(1);
    let lost = post_metrics(
        &receiver.http_addr(),
        "application/json",
        otlp_json(1).as_bytes(),
    );
    assert!(lost.is_err(), "expected no answer, got {lost:?}");
    assert_eq!(
        receiver.wait_for_points(2, WAIT).len(),
        2,
        "recorded all the same"
    );

    receiver.stop();
    assert!(
        post_metrics(
            &receiver.http_addr(),
            "application/json",
            otlp_json(2).as_bytes()
        )
        .is_err()
    );

    let endpoint = receiver.http_endpoint();
    receiver.restart();
    assert_eq!(
        receiver.http_endpoint(),
        endpoint,
        "same port after a restart"
    );
    let response = post_metrics(
        &receiver.http_addr(),
        "application/json",
        otlp_json(3).as_bytes(),
    )
    .expect("POST /v1/metrics");
    assert_eq!(response.status, 200);
    let points = receiver.wait_for_points(4, WAIT);
    assert_eq!(points[2]["asInt"], "3", "the same out file goes on");
}
