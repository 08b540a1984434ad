//! Planning one remote read: select every query's series in every tier, decide which store
//! chunks are needed, keep the whole read within its [`ReadBudget`], and fetch them, all
//! before the answer starts (so that a partial answer is known when the headers go out).
//!
//! The budget is charged as series are selected, not after: a query that selects every
//! series of a large tenant is refused after the index lookup, before any chunk is touched.
//! What is charged is what the plan holds that the head does not hold already: per selected
//! series its bookkeeping, the open chunk's copy, store chunk references and the bytes of
//! the store chunks to fetch. In-memory closed chunks are shared with the head, and spilled
//! chunks are read one series at a time by the encoder, so neither is held twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{add_warning, Querier, Selected};
use crate::head::ChunkHandle;
use crate::model::{Labels, Matcher, TenantId};
use crate::pressure::{Consumer, Memory, MemoryRefusal, Reservation};
use crate::store::catalog::RemoteChunk;

/// One query of a remote read, validated.
#[derive(Debug, Clone)]
pub struct ReadQuery {
    /// Start of the range, ms, inclusive.
    pub start: i64,
    /// End of the range, ms, inclusive.
    pub end: i64,
    /// The matchers.
    pub matchers: Vec<Matcher>,
}

/// What one remote read may hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBudget {
    /// Most bytes the plan (and, for SAMPLES, the answer) may hold.
    pub max_bytes: u64,
    /// Most series one read may select, summed over its queries.
    pub max_series: usize,
}

impl ReadBudget {
    /// No bound: for label queries, which hold labels only, and for tools.
    pub const UNLIMITED: ReadBudget = ReadBudget {
        max_bytes: u64::MAX,
        max_series: usize::MAX,
    };
}

/// Why a read was not planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The read would hold more than its byte budget.
    #[error(
        "remote read would hold more than {limit_bytes} bytes in memory \
         (--limits.max-read-bytes); narrow the query: fewer series or a shorter range"
    )]
    TooManyBytes {
        /// The budget.
        limit_bytes: u64,
    },
    /// The read would select more series than allowed.
    #[error(
        "remote read selects more than {limit} series (--limits.max-read-series); \
         narrow the query"
    )]
    TooManySeries {
        /// The bound.
        limit: usize,
    },
    /// A SAMPLES answer would carry more samples than allowed.
    #[error(
        "remote read would return more than {limit} samples (--limits.max-read-samples); \
         narrow the query"
    )]
    TooManySamples {
        /// The bound.
        limit: usize,
    },
    /// The read does not fit in the process's memory limit right now.
    #[error("{0}")]
    Memory(#[from] MemoryRefusal),
    /// The client went away; the work stopped.
    #[error("the client went away; the read stopped")]
    Cancelled,
    /// A bug: a blocking task panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A cancellation flag shared by a request's handler and the blocking work it started.
/// The handler holds a [`CancelOnDrop`]; when the client goes away, the server drops the
/// handler's future, the guard sets the flag, and the work stops at its next check (once
/// per series) with [`QueryError::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Whether the work should stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// A guard that cancels when dropped, unless disarmed first.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            cancel: self.clone(),
            armed: true,
            hook: None,
        }
    }
}

/// Cancels its [`Cancel`] when dropped while armed, and runs its hook then (see there).
pub struct CancelOnDrop {
    cancel: Cancel,
    armed: bool,
    hook: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for CancelOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelOnDrop")
            .field("cancel", &self.cancel)
            .field("armed", &self.armed)
            .finish()
    }
}

impl CancelOnDrop {
    /// Runs `hook` if the guard cancels (e.g. to count reads abandoned by their client).
    pub fn with_hook(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// The work finished: dropping the guard no longer cancels.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.cancel();
            if let Some(h) = self.hook.take() {
                h();
            }
        }
    }
}

/// A read request's queries with their series selected and their store chunks read.
#[derive(Debug)]
pub struct Prepared {
    /// Each query with its series, sorted by labels.
    pub queries: Vec<(ReadQuery, Vec<Selected>)>,
    /// Why the answer may be partial.
    pub warnings: Vec<String>,
    /// Bytes charged to the budget by the plan; an encoder adds its own to these.
    pub charged_bytes: u64,
    /// The plan's bytes reserved in the memory limit (when the querier has one); the
    /// encoder grows it with the answer and it is given back when the answer is done.
    pub reservation: Option<Reservation>,
}

/// The running charge of one read against its budget.
#[derive(Debug)]
pub(crate) struct ReadMeter {
    budget: ReadBudget,
    bytes: u64,
    series: usize,
    reservation: Option<Reservation>,
}

impl ReadMeter {
    pub(crate) fn new(budget: ReadBudget) -> Self {
        Self {
            budget,
            bytes: 0,
            series: 0,
            reservation: None,
        }
    }

    /// Also reserves every charged byte in `memory`; refused at once when memory is
    /// already over its limit.
    pub(crate) fn reserving(mut self, memory: Option<&Arc<Memory>>) -> Result<Self, QueryError> {
        if let Some(m) = memory {
            self.reservation = Some(m.try_reserve(Consumer::Queries, 0)?);
        }
        Ok(self)
    }

    pub(crate) fn charge_series(&mut self, n: usize) -> Result<(), QueryError> {
        self.series = self.series.saturating_add(n);
        if self.series > self.budget.max_series {
            return Err(QueryError::TooManySeries {
                limit: self.budget.max_series,
            });
        }
        // Counting the bookkeeping of the whole batch at once refuses a huge selection
        // before a single chunk is picked.
        self.charge_bytes(n as u64 * SERIES_OVERHEAD_BYTES)
    }

    pub(crate) fn charge_bytes(&mut self, n: u64) -> Result<(), QueryError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.budget.max_bytes {
            return Err(QueryError::TooManyBytes {
                limit_bytes: self.budget.max_bytes,
            });
        }
        if let Some(r) = self.reservation.as_mut() {
            r.try_grow(n)?;
        }
        Ok(())
    }
}

/// What one selected series costs before its labels and chunks: the [`Selected`] itself and
/// the head's `Arc<Series>` picked for it.
const SERIES_OVERHEAD_BYTES: u64 =
    (std::mem::size_of::<Selected>() + std::mem::size_of::<usize>()) as u64;

/// Bytes a selected series holds beyond [`SERIES_OVERHEAD_BYTES`]: its label array (the
/// strings are shared with the head or the catalog), its chunk handles and the open chunk's
/// copy, and its store chunk references.
pub(crate) fn selected_cost(labels: &Labels, head: &[ChunkHandle], remote: &[RemoteChunk]) -> u64 {
    let labels = (labels.len() * std::mem::size_of::<crate::model::Label>()) as u64;
    let head: u64 = head
        .iter()
        .map(|h| (std::mem::size_of::<ChunkHandle>() + h.held_bytes()) as u64)
        .sum();
    let remote: u64 = remote
        .iter()
        .map(|r| (std::mem::size_of::<RemoteChunk>() + r.path.as_ref().len()) as u64)
        .sum();
    labels + head + remote
}

impl Querier {
    /// Plans a remote read: selects every query's series in every tier, charging `budget` as
    /// it goes, and reads the store chunks the head does not hold (their bytes charged before
    /// they are read). Refused with [`QueryError::TooManyBytes`] or
    /// [`QueryError::TooManySeries`] as soon as the budget is exceeded, and with
    /// [`QueryError::Cancelled`] once `cancel` is set.
    pub async fn prepare(
        &self,
        tenant: &TenantId,
        queries: Vec<ReadQuery>,
        budget: ReadBudget,
        cancel: &Cancel,
    ) -> Result<Prepared, QueryError> {
        let deadline = self.deadline();
        let mut warnings = Vec::new();
        let mut out = Vec::with_capacity(queries.len());
        let mut meter = ReadMeter::new(budget).reserving(self.memory())?;
        for q in queries {
            let (a, m) = self
                .select_inner(
                    tenant,
                    &q.matchers,
                    q.start,
                    q.end,
                    deadline,
                    true,
                    meter,
                    cancel,
                )
                .await?;
            meter = m;
            for w in a.warnings {
                add_warning(&mut warnings, w);
            }
            let mut series = a.data;
            let (needed, bytes) = self.remote_needed(&series, q.start, q.end);
            meter.charge_bytes(bytes)?;
            if cancel.is_cancelled() {
                return Err(QueryError::Cancelled);
            }
            self.fetch_remote(&mut series, needed, deadline, &mut warnings)
                .await;
            // The references are no longer needed once read.
            for s in &mut series {
                s.remote = Vec::new();
            }
            out.push((q, series));
        }
        Ok(Prepared {
            queries: out,
            warnings,
            charged_bytes: meter.bytes,
            reservation: meter.reservation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{Head, HeadConfig};
    use crate::metrics::Metrics;
    use crate::model::MatchOp;
    use crate::proto::{decode_write_request, prompb, WriteBatch};
    use prost::Message;

    fn querier_with(series: usize, samples: usize) -> (Querier, TenantId) {
        let head = Arc::new(Head::new(HeadConfig::default(), Arc::new(Metrics::new())));
        let id = TenantId::parse("plan").unwrap();
        let t = head.tenant_or_create(&id);
        let req = prompb::WriteRequest {
            timeseries: (0..series)
                .map(|i| prompb::TimeSeries {
                    labels: vec![
                        prompb::Label {
                            name: "__name__".into(),
                            value: "m".into(),
                        },
                        prompb::Label {
                            name: "i".into(),
                            value: i.to_string(),
                        },
                    ],
                    samples: (0..samples)
                        .map(|k| prompb::Sample {
                            value: k as f64,
                            timestamp: k as i64 * 1000,
                        })
                        .collect(),
                    exemplars: vec![],
                    histograms: Vec::new(),
                })
                .collect(),
            metadata: vec![],
        };
        let raw = req.encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&raw, &mut batch).unwrap();
        assert_eq!(t.append(&batch, None).appended, (series * samples) as u64);
        (Querier::new(head), id)
    }

    fn all() -> ReadQuery {
        ReadQuery {
            start: i64::MIN,
            end: i64::MAX,
            matchers: vec![Matcher::new(MatchOp::Re, "__name__", ".*").unwrap()],
        }
    }

    #[tokio::test]
    async fn a_plan_over_the_byte_budget_is_refused_and_within_it_is_charged() {
        let (q, t) = querier_with(1000, 5);
        let roomy = ReadBudget {
            max_bytes: 64 << 20,
            max_series: 10_000,
        };
        let p = q
            .prepare(&t, vec![all()], roomy, &Cancel::default())
            .await
            .unwrap();
        assert_eq!(p.queries[0].1.len(), 1000);
        let per_query = p.charged_bytes;
        assert!(per_query >= 1000 * SERIES_OVERHEAD_BYTES, "{per_query}");
        // Two queries cost twice: a budget that fits one but not two refuses the request.
        let tight = ReadBudget {
            max_bytes: per_query + per_query / 2,
            ..roomy
        };
        let one = q.prepare(&t, vec![all()], tight, &Cancel::default()).await;
        assert!(one.is_ok());
        let two = q
            .prepare(&t, vec![all(), all()], tight, &Cancel::default())
            .await;
        assert!(
            matches!(two, Err(QueryError::TooManyBytes { limit_bytes }) if limit_bytes == tight.max_bytes),
            "{two:?}"
        );
    }

    /// A plan is reserved in the process's memory limit while it lives: refused with
    /// `QueryError::Memory` when it does not fit, and its bytes given back when it is done.
    #[tokio::test]
    async fn a_plan_is_reserved_in_the_memory_limit_and_refused_when_it_does_not_fit() {
        let (q, t) = querier_with(1000, 5);
        let metrics = Metrics::new();
        let roomy = ReadBudget {
            max_bytes: 64 << 20,
            max_series: 10_000,
        };
        let cost = q
            .prepare(&t, vec![all()], roomy, &Cancel::default())
            .await
            .unwrap()
            .charged_bytes;
        let memory = Arc::new(crate::pressure::Memory::new(cost * 3 / 2, &metrics));
        let q = q.with_memory(memory.clone());
        let p = q
            .prepare(&t, vec![all()], roomy, &Cancel::default())
            .await
            .unwrap();
        assert_eq!(memory.consumer_bytes(Consumer::Queries), cost);
        // A second plan while the first is alive does not fit.
        let second = q.prepare(&t, vec![all()], roomy, &Cancel::default()).await;
        assert!(matches!(second, Err(QueryError::Memory(_))), "{second:?}");
        assert_eq!(memory.consumer_bytes(Consumer::Queries), cost);
        drop(p);
        assert_eq!(memory.consumer_bytes(Consumer::Queries), 0);
        assert!(q
            .prepare(&t, vec![all()], roomy, &Cancel::default())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_plan_over_the_series_bound_is_refused() {
        let (q, t) = querier_with(100, 1);
        let budget = ReadBudget {
            max_bytes: u64::MAX,
            max_series: 150,
        };
        let r = q
            .prepare(&t, vec![all(), all()], budget, &Cancel::default())
            .await;
        assert!(
            matches!(r, Err(QueryError::TooManySeries { limit: 150 })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_cancelled_plan_stops() {
        let (q, t) = querier_with(10, 1);
        let hooks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hooks.clone();
        let cancel = Cancel::default();
        // A disarmed guard neither cancels nor runs its hook.
        cancel
            .on_drop()
            .with_hook(|| panic!("hook of a disarmed guard"))
            .disarm();
        assert!(!cancel.is_cancelled());
        drop(cancel.on_drop().with_hook(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        let r = q
            .prepare(&t, vec![all()], ReadBudget::UNLIMITED, &cancel)
            .await;
        assert!(matches!(r, Err(QueryError::Cancelled)), "{r:?}");
        assert_eq!(hooks.load(Ordering::Relaxed), 1, "the hook runs once");
    }
}
