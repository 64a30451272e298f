//! Trying a request again, the way the OpenTelemetry Collector's
//! exporterhelper does: exponential backoff with jitter, a per-attempt
//! timeout, the server's throttle hint honoured, and no retry of errors that
//! would fail the same way again.
//!
//! The loop does not decide what is worth retrying: each protocol classifies
//! its own errors through [`Classify`], and the loop only acts on the class.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::config::RetryConfig;
use crate::error::{Classify, RetryClass};

/// Growth of the wait per attempt; the Collector's default.
pub const MULTIPLIER: f64 = 1.5;
/// Each wait is drawn from `[w × (1 − f), w × (1 + f)]`, so that many
/// exporters failing together do not retry in lockstep; the Collector's
/// default.
pub const RANDOMIZATION_FACTOR: f64 = 0.5;

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub enabled: bool,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl RetryPolicy {
    pub fn from_config(config: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            enabled: config.enabled,
            initial_interval: config.initial_interval,
            max_interval: config.max_interval,
            max_elapsed_time: config.max_elapsed_time,
            multiplier: MULTIPLIER,
            randomization_factor: RANDOMIZATION_FACTOR,
        }
    }

    /// One attempt only.
    pub fn disabled() -> RetryPolicy {
        RetryPolicy {
            enabled: false,
            ..RetryPolicy::from_config(&RetryConfig::default())
        }
    }
}

/// The waits between attempts, before any throttle hint.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    current: Duration,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            policy: policy.clone(),
            current: policy.initial_interval,
        }
    }

    /// The next wait. `unit` in `[0, 1)` picks where in the jitter range it
    /// falls (0.5 is the middle), so tests can choose it.
    pub fn next_wait_at(&mut self, unit: f64) -> Duration {
        let p = &self.policy;
        let base = self.current.as_secs_f64();
        let delta = p.randomization_factor.clamp(0.0, 1.0) * base;
        let low = base - delta;
        let wait = low + unit.clamp(0.0, 1.0) * 2.0 * delta;
        let wait = Duration::try_from_secs_f64(wait)
            .unwrap_or(p.max_interval)
            .min(p.max_interval);
        let grown = Duration::try_from_secs_f64(base * p.multiplier).unwrap_or(p.max_interval);
        self.current = grown.min(p.max_interval);
        wait
    }

    pub fn next_wait(&mut self) -> Duration {
        self.next_wait_at(rand::random::<f64>())
    }
}

/// What an attempt that ran past its deadline turns into, so that the loop
/// can report it in the caller's error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTimeout(pub Duration);

/// The value of the attempt that succeeded.
#[derive(Debug)]
pub struct Success<T> {
    pub value: T,
    pub attempts: u32,
}

/// The error of the last attempt, and why the loop stopped.
#[derive(Debug)]
pub struct Failure<E> {
    pub error: E,
    pub attempts: u32,
    /// From the start of the first attempt to the end of the last.
    pub elapsed: Duration,
    /// False when the error was permanent; true when retrying was allowed
    /// but stopped (disabled, or the next wait would pass maxElapsedTime).
    pub gave_up: bool,
}

/// Runs `attempt(1)`, `attempt(2)`, ... until one succeeds, one fails
/// permanently, or the next wait would end past `max_elapsed_time`. Each
/// attempt gets `timeout` of its own. `exporter` names the exporter in logs.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    timeout: Duration,
    exporter: &str,
    mut attempt: F,
) -> Result<Success<T>, Failure<E>>
where
    E: Classify + Display + From<AttemptTimeout>,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut backoff = Backoff::new(policy);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match tokio::time::timeout(timeout, attempt(attempts)).await {
            Ok(Ok(value)) => return Ok(Success { value, attempts }),
            Ok(Err(e)) => e,
            Err(_) => E::from(AttemptTimeout(timeout)),
        };
        let class = error.retry_class();
        let gave_up = match class {
            RetryClass::Permanent => Some(false),
            _ if !policy.enabled => Some(true),
            _ => None,
        };
        let mut wait = Duration::ZERO;
        let gave_up = gave_up.or_else(|| {
            wait = backoff.next_wait();
            if let RetryClass::Throttled(hint) = class {
                wait = wait.max(hint);
            }
            (start.elapsed() + wait > policy.max_elapsed_time).then_some(true)
        });
        if let Some(gave_up) = gave_up {
            return Err(Failure {
                error,
                attempts,
                elapsed: start.elapsed(),
                gave_up,
            });
        }
        tracing::warn!(
            exporter,
            attempt = attempts,
            wait = %humantime::format_duration(wait),
            reason = %error,
            "export failed; retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, PartialEq)]
    enum TestError {
        Flaky,
        Slow(Duration),
        Throttle(Duration),
        Bad,
    }

    impl Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Classify for TestError {
        fn retry_class(&self) -> RetryClass {
            match self {
                TestError::Flaky | TestError::Slow(_) => RetryClass::Retryable,
                TestError::Throttle(d) => RetryClass::Throttled(*d),
                TestError::Bad => RetryClass::Permanent,
            }
        }
    }

    impl From<AttemptTimeout> for TestError {
        fn from(t: AttemptTimeout) -> Self {
            TestError::Slow(t.0)
        }
    }

    fn policy(initial: u64, max: u64, elapsed: u64) -> RetryPolicy {
        RetryPolicy {
            enabled: true,
            initial_interval: Duration::from_secs(initial),
            max_interval: Duration::from_secs(max),
            max_elapsed_time: Duration::from_secs(elapsed),
            multiplier: MULTIPLIER,
            randomization_factor: 0.0,
        }
    }

    /// Runs the loop with attempts that fail with `script[n]` (or succeed
    /// past its end) and returns the outcome and the start time of each
    /// attempt relative to the first.
    async fn run(
        policy: &RetryPolicy,
        timeout: Duration,
        script: Vec<TestError>,
    ) -> (Result<Success<u32>, Failure<TestError>>, Vec<Duration>) {
        let start = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let result = retry(policy, timeout, "test", |n| {
            let times = times.clone();
            let script = script.clone();
            async move {
                times.lock().expect("lock").push(start.elapsed());
                match script.get(n as usize - 1) {
                    None => Ok(n),
                    Some(TestError::Slow(d)) => {
                        tokio::time::sleep(*d).await;
                        Ok(n)
                    }
                    Some(e) => Err(e.clone()),
                }
            }
        })
        .await;
        let times = times.lock().expect("lock").clone();
        (result, times)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let mut b = Backoff::new(&policy(1, 4, 60));
        let waits: Vec<f64> = (0..6).map(|_| b.next_wait_at(0.0).as_secs_f64()).collect();
        assert_eq!(waits, vec![1.0, 1.5, 2.25, 3.375, 4.0, 4.0]);
    }

    #[test]
    fn jitter_stays_within_the_randomization_factor() {
        let mut p = policy(10, 100, 600);
        p.randomization_factor = RANDOMIZATION_FACTOR;
        assert_eq!(Backoff::new(&p).next_wait_at(0.0), secs(5.0));
        assert_eq!(Backoff::new(&p).next_wait_at(0.5), secs(10.0));
        assert_eq!(Backoff::new(&p).next_wait_at(1.0), secs(15.0));
        let mut b = Backoff::new(&p);
        for expected in [10.0, 15.0, 22.5] {
            let w = b.next_wait().as_secs_f64();
            assert!(
                (expected * 0.5..=expected * 1.5).contains(&w),
                "{w} outside {expected} ± 50%"
            );
        }
        // Jitter never lifts a wait over the cap.
        let mut p = policy(10, 10, 600);
        p.randomization_factor = RANDOMIZATION_FACTOR;
        assert_eq!(Backoff::new(&p).next_wait_at(1.0), secs(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let p = policy(1, 30, 300);
        let (result, times) = run(&p, secs(10.0), vec![TestError::Flaky, TestError::Flaky]).await;
        let success = result.expect("third attempt succeeds");
        assert_eq!((success.value, success.attempts), (3, 3));
        assert_eq!(times, vec![secs(0.0), secs(1.0), secs(2.5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_next_wait_would_pass_max_elapsed_time() {
        let p = policy(1, 30, 10);
        let (result, times) = run(&p, secs(10.0), vec![TestError::Flaky; 100]).await;
        let failure = result.expect_err("never succeeds");
        // Waits 1, 1.5, 2.25, 3.375 end at 8.125 s; the next (5.06 s) would
        // end at 13.2 s, past 10 s.
        assert_eq!(failure.attempts, 5);
        assert!(failure.gave_up);
        assert_eq!(failure.error, TestError::Flaky);
        assert_eq!(failure.elapsed, secs(8.125));
        assert_eq!(
            times,
            vec![secs(0.0), secs(1.0), secs(2.5), secs(4.75), secs(8.125)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let p = policy(1, 30, 300);
        let (result, times) = run(&p, secs(10.0), vec![TestError::Flaky, TestError::Bad]).await;
        let failure = result.expect_err("permanent");
        assert_eq!((failure.attempts, failure.gave_up), (2, false));
        assert_eq!(failure.error, TestError::Bad);
        assert_eq!(times.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_means_one_attempt() {
        let (result, times) =
            run(&RetryPolicy::disabled(), secs(10.0), vec![TestError::Flaky]).await;
        let failure = result.expect_err("no retry");
        assert_eq!((failure.attempts, failure.gave_up), (1, true));
        assert_eq!(times.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_hint_lengthens_the_wait() {
        let p = policy(1, 30, 300);
        let (result, times) = run(
            &p,
            secs(10.0),
            vec![
                TestError::Throttle(secs(7.0)),
                // A hint shorter than the backoff does not shorten it.
                TestError::Throttle(secs(0.5)),
            ],
        )
        .await;
        assert_eq!(result.expect("succeeds").attempts, 3);
        assert_eq!(times, vec![secs(0.0), secs(7.0), secs(8.5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_hint_past_max_elapsed_time_gives_up_at_once() {
        let p = policy(1, 30, 60);
        let (result, times) = run(&p, secs(10.0), vec![TestError::Throttle(secs(3600.0))]).await;
        let failure = result.expect_err("gives up");
        assert_eq!(failure.attempts, 1);
        assert_eq!(
            failure.error.retry_class(),
            RetryClass::Throttled(secs(3600.0))
        );
        assert_eq!(times, vec![secs(0.0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_has_its_own_timeout() {
        let p = policy(1, 30, 300);
        // The first two attempts hang for an hour; each is cut at 2 s.
        let (result, times) = run(
            &p,
            secs(2.0),
            vec![TestError::Slow(secs(3600.0)), TestError::Slow(secs(3600.0))],
        )
        .await;
        assert_eq!(result.expect("third attempt succeeds").attempts, 3);
        assert_eq!(times, vec![secs(0.0), secs(3.0), secs(6.5)]);

        let (result, _) = run(
            &RetryPolicy::disabled(),
            secs(2.0),
            vec![TestError::Slow(secs(3600.0))],
        )
        .await;
        assert_eq!(
            result.expect_err("times out").error,
            TestError::Slow(secs(2.0))
        );
    }
}
