//! How a running job is asked to stop, and how far it may go first.
//!
//! A run is never dropped in the middle: dropping it loses what the
//! receiver already accepted but was not committed yet, and the next
//! holder sends it again. Instead the run is told, and stops itself at a
//! point where its progress is true:
//!
//! - [`StopLevel::Drain`] (rebalance, shutdown, a changed plan): finish the
//!   chunk in flight (deliver it, commit it), then stop.
//! - [`StopLevel::Now`] (the Lease is lost, the drain took too long): stop
//!   after the request in flight, recording the requests already accepted.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    Run,
    Drain,
    Now,
}

/// The job's side: read where it is told to stop.
#[derive(Clone, Debug)]
pub struct Stop {
    rx: watch::Receiver<StopLevel>,
}

/// The owner's side.
#[derive(Clone, Debug)]
pub struct StopHandle {
    tx: std::sync::Arc<watch::Sender<StopLevel>>,
}

pub fn stop_pair() -> (StopHandle, Stop) {
    let (tx, rx) = watch::channel(StopLevel::Run);
    (
        StopHandle {
            tx: std::sync::Arc::new(tx),
        },
        Stop { rx },
    )
}

impl StopHandle {
    /// Raises the level; a stop is never taken back.
    pub fn raise(&self, level: StopLevel) {
        self.tx.send_if_modified(|current| {
            let raised = level > *current;
            if raised {
                *current = level;
            }
            raised
        });
    }

    pub fn drain(&self) {
        self.raise(StopLevel::Drain);
    }

    pub fn now(&self) {
        self.raise(StopLevel::Now);
    }

    pub fn stop(&self) -> Stop {
        Stop {
            rx: self.tx.subscribe(),
        }
    }
}

impl Stop {
    /// A run nobody stops (`--once` in local mode).
    pub fn never() -> Stop {
        let (handle, stop) = stop_pair();
        // The value stays readable after the sender is gone.
        drop(handle);
        stop
    }

    pub fn level(&self) -> StopLevel {
        *self.rx.borrow()
    }

    pub fn draining(&self) -> bool {
        self.level() >= StopLevel::Drain
    }

    pub fn now(&self) -> bool {
        self.level() >= StopLevel::Now
    }

    /// Resolves once the level is at least `level`; never when nobody can
    /// raise it any more.
    pub async fn reached(&self, level: StopLevel) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|l| *l >= level).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn levels_only_rise_and_wake_waiters() {
        let (handle, stop) = stop_pair();
        assert_eq!(stop.level(), StopLevel::Run);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.reached(StopLevel::Drain).await }
        });
        handle.now();
        handle.drain();
        waiter.await.unwrap();
        assert_eq!(stop.level(), StopLevel::Now);
        assert!(stop.draining() && stop.now());
    }

    #[tokio::test]
    async fn a_stop_nobody_holds_stays_at_run() {
        let stop = Stop::never();
        assert_eq!(stop.level(), StopLevel::Run);
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            stop.reached(StopLevel::Drain),
        )
        .await;
        assert!(waited.is_err());
    }
}
