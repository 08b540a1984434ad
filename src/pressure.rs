//! Backpressure: the memory and disk budgets, and the one place that decides whether a push
//! may be taken.
//!
//! The order (DESIGN.md): keep chunk data in memory within `--limits.memory-bytes` by
//! dropping chunks the store already has and spilling the oldest unflushed closed chunks to
//! local files; past `--limits.disk-bytes` of WAL and spill on disk, refuse pushes with
//! 503 + Retry-After (never 429: Prometheus drops data on 429 unless told otherwise, and
//! retries a 503 until it goes through).
//!
//! The balancer ([`Pressure::run`]) checks every [`Pressure::PERIOD`]; a push only reads two
//! atomics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::head::Head;
use crate::metrics::Metrics;

/// The budgets.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Bytes of closed chunks in memory.
    pub memory_bytes: u64,
    /// Bytes of WAL and spill files on disk.
    pub disk_bytes: u64,
}

/// Why a push is refused for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The disk budget is used up.
    Disk {
        /// Bytes in use.
        used: u64,
        /// The budget.
        budget: u64,
    },
    /// Memory is over budget and nothing more can be spilled.
    Memory {
        /// Bytes in use.
        used: u64,
        /// The budget.
        budget: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Disk { used, budget } => write!(
                f,
                "local disk budget used up ({used} of {budget} bytes of WAL and spill): \
                 the object store is not taking uploads fast enough; retry later"
            ),
            Refusal::Memory { used, budget } => write!(
                f,
                "chunk memory over budget ({used} of {budget} bytes) and nothing more can \
                 be spilled; retry later"
            ),
        }
    }
}

/// Shared budget state.
#[derive(Debug)]
pub struct Pressure {
    budgets: Budgets,
    wal_dir: PathBuf,
    disk_used: AtomicU64,
    refuse_memory: AtomicBool,
}

impl Pressure {
    /// How often the balancer runs.
    pub const PERIOD: Duration = Duration::from_millis(200);
    /// Memory hard limit, as a multiple of the budget, past which pushes are refused (the
    /// balancer could not spill fast enough, or spilling failed).
    const MEMORY_REFUSE_FACTOR: u64 = 2;

    /// Budgets over a WAL directory.
    pub fn new(budgets: Budgets, wal_dir: &Path) -> Self {
        Self {
            budgets,
            wal_dir: wal_dir.to_path_buf(),
            disk_used: AtomicU64::new(0),
            refuse_memory: AtomicBool::new(false),
        }
    }

    /// The budgets.
    pub fn budgets(&self) -> Budgets {
        self.budgets
    }

    /// Whether a push may be taken now.
    pub fn check_push(&self, head: &Head) -> Result<(), Refusal> {
        let used = self.disk_used.load(Ordering::Relaxed);
        if used >= self.budgets.disk_bytes {
            return Err(Refusal::Disk {
                used,
                budget: self.budgets.disk_bytes,
            });
        }
        if self.refuse_memory.load(Ordering::Relaxed) {
            return Err(Refusal::Memory {
                used: head.closed_bytes(),
                budget: self.budgets.memory_bytes,
            });
        }
        Ok(())
    }

    /// Bytes of WAL (segments and checkpoints) on disk.
    pub fn wal_bytes(&self) -> u64 {
        dir_bytes(&self.wal_dir)
    }

    /// Records disk use (WAL plus `spill_bytes`) and memory state; returns the disk use.
    pub fn observe(&self, head: &Head, spill_bytes: u64, metrics: &Metrics) -> u64 {
        let used = self.wal_bytes() + spill_bytes;
        self.disk_used.store(used, Ordering::Relaxed);
        metrics.disk_bytes.set(used as i64);
        metrics
            .disk_limit_bytes
            .set(self.budgets.disk_bytes.min(i64::MAX as u64) as i64);
        let mem = head.closed_bytes();
        metrics.memory_chunk_bytes.set(mem as i64);
        self.refuse_memory.store(
            mem > self
                .budgets
                .memory_bytes
                .saturating_mul(Self::MEMORY_REFUSE_FACTOR),
            Ordering::Relaxed,
        );
        used
    }

    /// Runs `balance` every [`Pressure::PERIOD`] forever (in a blocking thread: spilling
    /// writes files).
    pub async fn run(self: Arc<Self>, balance: impl Fn(&Pressure) + Send + Sync + 'static) {
        let balance = Arc::new(balance);
        let mut tick = tokio::time::interval(Self::PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            let b = balance.clone();
            let _ = tokio::task::spawn_blocking(move || b(&me)).await;
        }
    }
}

/// Allocated bytes of the regular files in `dir` (not recursive; the WAL is flat).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| {
            // Allocated, not apparent, size: WAL segments are preallocated.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }
            #[cfg(not(unix))]
            {
                m.len()
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_over_budget_refuses_and_under_budget_accepts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seg"), vec![1u8; 64 << 10]).unwrap();
        let head = Head::new(Default::default(), Arc::new(Metrics::new()));
        let m = Metrics::new();
        let p = Pressure::new(
            Budgets {
                memory_bytes: 1 << 20,
                disk_bytes: 100 << 10,
            },
            dir.path(),
        );
        let used = p.observe(&head, 0, &m);
        assert!(used >= 64 << 10, "{used}");
        // Both sides of the disk alert's ratio are exported.
        assert_eq!(m.disk_bytes.get(), used as i64);
        assert_eq!(m.disk_limit_bytes.get(), 100 << 10);
        assert_eq!(p.check_push(&head), Ok(()));
        p.observe(&head, 64 << 10, &m);
        let e = p.check_push(&head).unwrap_err();
        assert!(matches!(e, Refusal::Disk { .. }), "{e}");
        assert!(e.to_string().contains("disk budget"));
        std::fs::remove_file(dir.path().join("seg")).unwrap();
        p.observe(&head, 0, &m);
        assert_eq!(p.check_push(&head), Ok(()));
    }

    #[test]
    fn memory_past_twice_the_budget_refuses_until_it_drops() {
        use crate::proto::{WriteBatch, WriteSeries};
        let dir = tempfile::tempdir().unwrap();
        let head = Head::new(Default::default(), Arc::new(Metrics::new()));
        let m = Metrics::new();
        let p = Pressure::new(
            Budgets {
                memory_bytes: 100,
                disk_bytes: u64::MAX,
            },
            dir.path(),
        );
        let t = head.tenant_or_create(&crate::model::TenantId::parse("t").unwrap());
        let mut b = WriteBatch::default();
        b.labels.push((b"__name__".as_slice(), b"m".as_slice()));
        b.samples
            .extend((0..1000i64).map(|i| (i * 1000, (i * 37) as f64)));
        b.series.push(WriteSeries {
            labels_start: 0,
            labels_end: 1,
            samples_start: 0,
            samples_end: 1000,
            ..WriteSeries::default()
        });
        t.append(&b, None);
        assert!(head.closed_bytes() > 200);
        p.observe(&head, 0, &m);
        let e = p.check_push(&head).unwrap_err();
        assert!(matches!(e, Refusal::Memory { .. }), "{e}");
        assert_eq!(m.memory_chunk_bytes.get(), head.closed_bytes() as i64);
        // Flushed and released chunks no longer count.
        for s in t.all_series() {
            let mut pending = Vec::new();
            s.pending(&mut pending);
            let min_ts: Vec<i64> = pending.iter().map(|c| c.min_t).collect();
            s.take_for_flush(&min_ts);
            s.finish_flush(&min_ts, true, 1);
        }
        t.release_flushed(Duration::ZERO, true, &|_| true);
        p.observe(&head, 0, &m);
        assert_eq!(p.check_push(&head), Ok(()));
    }
}
