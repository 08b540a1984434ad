//! When to checkpoint: every `--wal.checkpoint-interval`, or sooner once the WAL has grown by
//! a size threshold since the last checkpoint. (The third trigger, shutdown, is the caller's:
//! it calls its checkpoint function once more after [`run_checkpoint_schedule`] returns.)
//!
//! A failed checkpoint is retried with exponential backoff (capped at the interval), not at
//! every poll: a checkpoint rereads the whole head, and hammering a full disk helps nobody.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::Wal;

/// When checkpoints are taken. Every field is set explicitly by the caller.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// `--wal.checkpoint-interval` (30 minutes in weft's defaults).
    pub interval: Duration,
    /// Checkpoint early once this many bytes were appended since the last checkpoint.
    pub max_wal_growth_bytes: u64,
    /// How often the size threshold is checked.
    pub poll: Duration,
    /// First retry delay after a failed checkpoint; doubles up to `interval`.
    pub retry_backoff: Duration,
}

/// Runs `checkpoint` whenever `policy` says one is due, until `shutdown` completes.
/// Returns the number of successful checkpoints.
/// The checkpoint function's error only needs to be printable: the caller's own error type
/// (the ingester's, which wraps [`super::WalError`]) passes through.
pub async fn run_checkpoint_schedule<F, Fut, E>(
    wal: Arc<Wal>,
    policy: CheckpointPolicy,
    mut checkpoint: F,
    shutdown: impl Future<Output = ()>,
) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(shutdown);
    let mut last = Instant::now();
    let mut bytes_at_last = wal.growth_bytes();
    let mut retry_at: Option<(Instant, Duration)> = None;
    let mut done = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => return done,
            _ = tokio::time::sleep(policy.poll) => {}
        }
        let now = Instant::now();
        let grown = wal.growth_bytes() - bytes_at_last;
        let due = match retry_at {
            Some((at, _)) => now >= at,
            None => now - last >= policy.interval || grown >= policy.max_wal_growth_bytes,
        };
        if !due {
            continue;
        }
        let bytes_before = wal.growth_bytes();
        match checkpoint().await {
            Ok(()) => {
                info!(wal_growth_bytes = grown, "scheduled checkpoint done");
                done += 1;
                last = Instant::now();
                bytes_at_last = bytes_before;
                retry_at = None;
            }
            Err(e) => {
                let backoff =
                    retry_at.map_or(policy.retry_backoff, |(_, b)| (b * 2).min(policy.interval));
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "checkpoint failed");
                retry_at = Some((Instant::now() + backoff, backoff));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalError;
    use crate::wal::{MemDir, Record, SyncMode, WalConfig};
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn policy() -> CheckpointPolicy {
        CheckpointPolicy {
            interval: Duration::from_secs(30 * 60),
            max_wal_growth_bytes: 10_000,
            poll: Duration::from_secs(1),
            retry_backoff: Duration::from_secs(1),
        }
    }

    fn wal() -> Arc<Wal> {
        let cfg = WalConfig {
            segment_size_bytes: 1 << 20,
            // No sync thread: nothing here may run outside tokio's paused clock.
            sync: SyncMode::Never,
            on_corruption: crate::wal::OnCorruption::Repair,
        };
        Arc::new(
            Wal::open(Arc::new(MemDir::new()), cfg, |_| Ok(()))
                .unwrap()
                .0,
        )
    }

    /// Spawns the schedule with a checkpoint that counts calls and fails while `fail` is set.
    fn spawn(
        wal: Arc<Wal>,
        fail: Arc<AtomicU64>,
    ) -> (
        Arc<AtomicU64>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<u64>,
    ) {
        let calls = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = calls.clone();
        let h = tokio::spawn(run_checkpoint_schedule(
            wal,
            policy(),
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                let failing = fail.load(Ordering::SeqCst) > 0;
                async move {
                    if failing {
                        Err(WalError::DiskFull {
                            segment: "x".into(),
                        })
                    } else {
                        Ok(())
                    }
                }
            },
            async {
                let _ = rx.await;
            },
        ));
        (calls, tx, h)
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoint_runs_once_per_interval() {
        let (calls, tx, h) = spawn(wal(), Arc::new(AtomicU64::new(0)));
        tokio::time::sleep(Duration::from_secs(29 * 60 + 58)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(30 * 60)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tx.send(()).unwrap();
        assert_eq!(h.await.unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoint_runs_early_when_the_wal_grows_past_the_threshold() {
        let wal = wal();
        let (calls, tx, h) = spawn(wal.clone(), Arc::new(AtomicU64::new(0)));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let s: Vec<_> = (0..1000)
            .map(|t| crate::wal::RefSample {
                series_ref: 1,
                t,
                v: 0,
            })
            .collect();
        wal.append(&[Record::Samples(Cow::Owned(s))]).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "within one poll of crossing"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "growth was reset by the checkpoint"
        );
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failed_checkpoint_is_retried_with_exponential_backoff() {
        let fail = Arc::new(AtomicU64::new(1));
        let (calls, tx, h) = spawn(wal(), fail.clone());
        // Due at 30m; then retries after 1s, 2s, 4s, 8s (each rounded up to the 1s poll).
        tokio::time::sleep(Duration::from_secs(30 * 60) + Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(1 + 2 + 4)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        fail.store(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "back to the interval after success"
        );
        tx.send(()).unwrap();
        assert_eq!(h.await.unwrap(), 1);
    }
}
