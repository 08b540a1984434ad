//! Retrying store calls forever without hammering a store that is down.
//!
//! - [`Backoff`]: capped exponential backoff with full jitter (a delay drawn uniformly from
//!   `0..=min(max, initial * 2^attempt)`, as in the AWS Architecture Blog's "Exponential
//!   Backoff And Jitter"), from a seeded RNG so tests are deterministic. It has no last
//!   attempt: weft's data is only safe once it is in the store, so giving up is not an option.
//! - [`CircuitBreaker`]: after `failure_threshold` consecutive failures the circuit opens and
//!   the store counts as down (`weft_store_up` = 0). While open, one probe call at a time is
//!   let through every `probe_interval` (half-open); a probe that succeeds closes it.
//!   [`trip`](CircuitBreaker::trip) opens it at once, for a failure that is strong evidence
//!   on its own (a read with no first byte by its deadline). weft keeps one breaker for
//!   reads and one for writes ([`super::health::StoreHealth`]).
//! - [`retry`]: the loop that combines them.
//!
//! Time is tokio's, so all of it is tested under `#[tokio::test(start_paused = true)]`.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::StoreError;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling; delays never exceed it.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

/// Capped exponential backoff with full jitter. Never runs out.
#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    rng: SmallRng,
}

impl Backoff {
    /// A backoff whose jitter comes from an RNG seeded with `seed`.
    pub fn new(cfg: BackoffConfig, seed: u64) -> Self {
        Self {
            cfg,
            attempt: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// A backoff seeded from the OS, for production (so ingesters do not retry in lockstep).
    pub fn from_entropy(cfg: BackoffConfig) -> Self {
        Self {
            cfg,
            attempt: 0,
            rng: SmallRng::from_os_rng(),
        }
    }

    /// The ceiling of the next delay: `min(max, initial * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        // 2^20 * initial is far past any sensible max; stop doubling there so nothing overflows.
        let factor = 1u32 << self.attempt.min(20);
        self.cfg.initial.saturating_mul(factor).min(self.cfg.max)
    }

    /// The next delay, uniformly in `0..=ceiling()`, and one step further up.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit (at least 1).
    pub failure_threshold: u32,
    /// While open, how often a probe call is let through.
    pub probe_interval: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            probe_interval: Duration::from_secs(5),
        }
    }
}

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// The store works; every call goes through.
    Closed,
    /// The store is down; calls wait for the next probe.
    Open,
    /// The store is down and one probe call is in flight.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    next_probe_at: Instant,
}

/// Told `true` when the circuit closes and `false` when it opens (not on every call).
type Observer = Box<dyn Fn(bool) + Send + Sync>;

/// A circuit breaker over one kind of call to one store. Shared by every caller of it.
pub struct CircuitBreaker {
    cfg: CircuitConfig,
    inner: Mutex<Inner>,
    /// Woken when the circuit leaves the closed state, so calls already in flight can stop
    /// waiting ([`until_down`](Self::until_down)).
    down: Notify,
    observer: Option<Observer>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("cfg", &self.cfg)
            .field("inner", &*self.inner.lock())
            .finish_non_exhaustive()
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_call`]. Report how it went with
/// [`finish`](Self::finish); dropping it unreported (the caller was cancelled) counts as
/// neither, and a dropped probe lets the next probe go at once.
#[derive(Debug)]
#[must_use = "report the outcome with finish()"]
pub struct CallGuard<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    done: bool,
}

impl CallGuard<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records the outcome: success, or an error that is an answer rather than an outage
    /// (NotFound, corruption), closes the circuit; a retryable error counts as a failure.
    pub fn finish<T>(mut self, result: &Result<T, StoreError>) {
        self.done = true;
        match result {
            Err(e) if e.is_retryable() => self.breaker.record_failure(),
            _ => self.breaker.record_success(),
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            let mut st = self.breaker.inner.lock();
            if st.state == CircuitState::HalfOpen {
                st.state = CircuitState::Open;
                st.next_probe_at = Instant::now();
            }
        }
    }
}

impl CircuitBreaker {
    /// A closed circuit.
    pub fn new(cfg: CircuitConfig) -> Self {
        let cfg = CircuitConfig {
            failure_threshold: cfg.failure_threshold.max(1),
            ..cfg
        };
        Self {
            cfg,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                next_probe_at: Instant::now(),
            }),
            down: Notify::new(),
            observer: None,
        }
    }

    /// The same breaker, telling `f` each time the store goes up (`true`, the circuit
    /// closes) or down (`false`, it opens). For the `weft_store_up` gauge, so it moves the
    /// moment the breaker decides, whoever made the call.
    pub fn with_observer(mut self, f: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// The settings, the threshold clamped to at least 1.
    pub fn config(&self) -> CircuitConfig {
        self.cfg
    }

    /// Returns once the circuit is not closed: at once if it is open or half-open now,
    /// else when it opens. A call in flight races against this to stop waiting on a store
    /// that another call has just found down.
    pub async fn until_down(&self) {
        loop {
            let notified = self.down.notified();
            tokio::pin!(notified);
            // Registered before the check, so an opening between the two is not missed.
            notified.as_mut().enable();
            if self.state() != CircuitState::Closed {
                return;
            }
            notified.await;
        }
    }

    /// Tells the observer and the waiters of [`until_down`](Self::until_down) about a
    /// change; called with the lock released.
    fn changed(&self, up: bool) {
        if !up {
            self.down.notify_waiters();
        }
        if let Some(f) = &self.observer {
            f(up);
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.inner.lock().state
    }

    /// The `weft_store_up` gauge: 1 while closed, 0 while open or probing.
    pub fn up(&self) -> i64 {
        i64::from(self.state() == CircuitState::Closed)
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.lock().consecutive_failures
    }

    /// Asks to make a call. Closed: yes. Open and the probe time has come: yes, as the probe
    /// (the circuit goes half-open). Otherwise: not yet, with how long to wait.
    pub fn try_call(&self) -> Result<CallGuard<'_>, Duration> {
        let mut st = self.inner.lock();
        let now = Instant::now();
        match st.state {
            CircuitState::Closed => Ok(CallGuard {
                breaker: self,
                probe: false,
                done: false,
            }),
            CircuitState::Open if now >= st.next_probe_at => {
                st.state = CircuitState::HalfOpen;
                Ok(CallGuard {
                    breaker: self,
                    probe: true,
                    done: false,
                })
            }
            CircuitState::Open => Err(st.next_probe_at - now),
            // Somebody else is probing; check again after an interval.
            CircuitState::HalfOpen => Err(self.cfg.probe_interval),
        }
    }

    /// A call succeeded: the store answers, so the circuit closes.
    pub fn record_success(&self) {
        let mut st = self.inner.lock();
        st.consecutive_failures = 0;
        let was_down = st.state != CircuitState::Closed;
        st.state = CircuitState::Closed;
        drop(st);
        if was_down {
            tracing::info!("object store reachable again; circuit closed");
            self.changed(true);
        }
    }

    /// A failure that is evidence enough on its own: the circuit opens now, whatever the
    /// count. Already open: nothing changes (no new probe time), as for a late failure.
    pub fn trip(&self) {
        let mut st = self.inner.lock();
        st.consecutive_failures = st.consecutive_failures.saturating_add(1);
        let was_closed = st.state == CircuitState::Closed;
        if st.state != CircuitState::Open {
            st.state = CircuitState::Open;
            st.next_probe_at = Instant::now() + self.cfg.probe_interval;
        }
        drop(st);
        if was_closed {
            tracing::warn!(
                "object store not answering; circuit open at once, probing every {:?}",
                self.cfg.probe_interval
            );
            self.changed(false);
        }
    }

    /// A call failed. The threshold-th failure in a row opens the circuit; a failed probe
    /// keeps it open until the next interval.
    pub fn record_failure(&self) {
        let mut st = self.inner.lock();
        st.consecutive_failures = st.consecutive_failures.saturating_add(1);
        let reopen = match st.state {
            CircuitState::Closed => st.consecutive_failures >= self.cfg.failure_threshold,
            CircuitState::HalfOpen => true,
            // A call admitted before the circuit opened failed late: no new probe time.
            CircuitState::Open => false,
        };
        if reopen {
            let was_closed = st.state == CircuitState::Closed;
            st.state = CircuitState::Open;
            st.next_probe_at = Instant::now() + self.cfg.probe_interval;
            let failures = st.consecutive_failures;
            drop(st);
            if was_closed {
                tracing::warn!(
                    failures,
                    "object store failing; circuit open, probing every {:?}",
                    self.cfg.probe_interval
                );
                self.changed(false);
            }
        }
    }
}

/// Runs `op` until it succeeds or fails with an error that retrying cannot fix (NotFound,
/// corruption, bad input), which it returns. Retryable errors (timeouts, backend failures)
/// are retried forever: after each one it sleeps a backoff delay, and while the circuit is
/// open it waits for its turn to probe. `op` is called once per attempt, so the caller can
/// count attempts there. Cancel by dropping the future.
pub async fn retry<T, F, Fut>(
    breaker: &CircuitBreaker,
    backoff: &mut Backoff,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    loop {
        let guard = match breaker.try_call() {
            Ok(g) => g,
            Err(wait) => {
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let result = op().await;
        guard.finish(&result);
        match result {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::debug!(error = %e, attempt = backoff.attempt(), ?delay, "store call failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::store::faulty::{Fault, FaultyStore, Op};
    use crate::store::{Store, StoreOptions};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_delays_stay_under_a_doubling_capped_ceiling() {
        let cfg = BackoffConfig {
            initial: 100 * MS,
            max: 2_000 * MS,
        };
        let mut b = Backoff::new(cfg, 7);
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling();
                assert!(b.next_delay() <= c);
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), 100 * MS);
    }

    #[test]
    fn backoff_is_deterministic_for_a_seed_and_jittered_across_the_range() {
        let cfg = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        let run = |seed| {
            let mut b = Backoff::new(cfg, seed);
            (0..1000).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // Full jitter: spread over the whole range, not bunched at the ceiling.
        let d = run(3);
        assert!(d.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(d.iter().any(|d| *d > Duration::from_millis(900)));
    }

    #[test]
    fn backoff_never_runs_out_or_overflows() {
        let cfg = BackoffConfig {
            initial: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
        };
        let mut b = Backoff::new(cfg, 0);
        for _ in 0..100 {
            let _ = b.next_delay();
        }
        assert_eq!(b.attempt(), 100);
    }

    fn ok() -> Result<(), StoreError> {
        Ok(())
    }

    fn down() -> Result<(), StoreError> {
        Err(StoreError::Timeout {
            op: "put",
            path: "x".into(),
            after: Duration::from_secs(1),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn circuit_opens_at_the_threshold_and_probes_once_per_interval() {
        let cb = CircuitBreaker::new(CircuitConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_secs(10),
        });
        for _ in 0..2 {
            cb.try_call().unwrap().finish(&down());
        }
        assert_eq!((cb.state(), cb.up()), (CircuitState::Closed, 1));
        cb.try_call().unwrap().finish(&down());
        assert_eq!((cb.state(), cb.up()), (CircuitState::Open, 0));
        assert_eq!(cb.try_call().unwrap_err(), Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(cb.try_call().unwrap_err(), Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(6)).await;
        let probe = cb.try_call().unwrap();
        assert!(probe.is_probe());
        assert_eq!(cb.state(), CircuitState::HalfOpen);
        assert!(cb.try_call().is_err(), "one probe at a time");
        probe.finish(&down());
        assert_eq!(cb.state(), CircuitState::Open);
        assert_eq!(cb.try_call().unwrap_err(), Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(10)).await;
        cb.try_call().unwrap().finish(&ok());
        assert_eq!(
            (cb.state(), cb.up(), cb.consecutive_failures()),
            (CircuitState::Closed, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn trip_opens_at_once_and_wakes_calls_waiting_on_until_down() {
        let cb = Arc::new(CircuitBreaker::new(CircuitConfig {
            failure_threshold: 5,
            probe_interval: Duration::from_secs(10),
        }));
        let waiter = {
            let cb = cb.clone();
            tokio::spawn(async move {
                cb.until_down().await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished(), "closed: until_down waits");
        let tripped_at = Instant::now();
        cb.trip();
        assert_eq!((cb.state(), cb.up()), (CircuitState::Open, 0));
        assert_eq!(waiter.await.unwrap(), tripped_at, "woken at the trip");
        // Open already: until_down returns at once; a second trip keeps the probe time.
        cb.until_down().await;
        tokio::time::advance(Duration::from_secs(4)).await;
        cb.trip();
        assert_eq!(cb.try_call().unwrap_err(), Duration::from_secs(6));
        // Half-open: a trip reopens with a fresh interval, like a failed probe.
        tokio::time::advance(Duration::from_secs(6)).await;
        let probe = cb.try_call().unwrap();
        cb.trip();
        assert_eq!(cb.state(), CircuitState::Open);
        drop(probe);
        assert_eq!(cb.try_call().unwrap_err(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_lets_the_next_probe_go_at_once() {
        let cb = CircuitBreaker::new(CircuitConfig {
            failure_threshold: 1,
            probe_interval: Duration::from_secs(10),
        });
        cb.try_call().unwrap().finish(&down());
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(cb.try_call().unwrap());
        assert_eq!(cb.state(), CircuitState::Open);
        assert!(cb.try_call().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_are_not_outages_keep_the_circuit_closed() {
        let cb = CircuitBreaker::new(CircuitConfig {
            failure_threshold: 1,
            probe_interval: Duration::from_secs(10),
        });
        let not_found: Result<(), _> = Err(StoreError::NotFound { path: "x".into() });
        cb.try_call().unwrap().finish(&not_found);
        assert_eq!(cb.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_rides_out_an_outage_and_probes_at_the_interval() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let opts = StoreOptions {
            timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), Path::default(), &opts);
        let cb = Arc::new(CircuitBreaker::new(CircuitConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_secs(5),
        }));
        let mut backoff = Backoff::new(
            BackoffConfig {
                initial: 100 * MS,
                max: Duration::from_secs(1),
            },
            42,
        );
        // A hanging store: each attempt costs the 2 s deadline.
        faulty.set(&Op::ALL, Some(Fault::Hang));

        let start = Instant::now();
        let task = {
            let (store, cb) = (store.clone(), cb.clone());
            tokio::spawn(async move {
                let mut attempts = 0u32;
                retry(&cb, &mut backoff, || {
                    attempts += 1;
                    let store = store.clone();
                    async move { store.put(&Path::from("o"), Bytes::from_static(b"x")).await }
                })
                .await
                .map(|()| attempts)
            })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!((cb.state(), cb.up()), (CircuitState::Open, 0));
        // 3 attempts to open (≤ 2 s + 1 s backoff each), then one probe per ≥ 5 s.
        let calls = faulty.calls(Op::Put);
        assert!((8..=14).contains(&calls), "{calls} attempts in 60 s");

        faulty.set(&Op::ALL, None);
        let attempts = task.await.unwrap().unwrap();
        assert_eq!(attempts as u64, faulty.calls(Op::Put));
        assert_eq!(cb.state(), CircuitState::Closed);
        // Back within one probe interval plus one deadline of the recovery.
        assert!(
            start.elapsed() <= Duration::from_secs(60 + 2 + 5 + 1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            store.get(&Path::from("o")).await.unwrap(),
            Bytes::from_static(b"x")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_returns_errors_that_retrying_cannot_fix() {
        let cb = CircuitBreaker::new(CircuitConfig::default());
        let mut backoff = Backoff::new(BackoffConfig::default(), 0);
        let mut n = 0;
        let r: Result<(), _> = retry(&cb, &mut backoff, || {
            n += 1;
            async { Err(StoreError::Corrupt("bad".into())) }
        })
        .await;
        assert!(matches!(r, Err(StoreError::Corrupt(_))));
        assert_eq!(n, 1);
    }
}
