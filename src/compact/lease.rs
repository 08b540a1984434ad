//! The compactor's lease: at most one compactor works on a store prefix at a time.
//!
//! The lease is a sequence of generations, `<prefix>/compactor-lease/<gen:016x>`, each a
//! small text object naming its holder and when it expires (wall clock, ms). The newest
//! generation is the lease. Taking it (none yet, or the newest has expired) and renewing it
//! (the newest is ours) are the same step: create generation `newest + 1` with a
//! conditional put that fails if it exists (`PutMode::Create`). Of two compactors racing
//! for the same generation exactly one succeeds; the other sees the winner's generation on
//! its next look. Older generations are deleted by the holder.
//!
//! Why generations rather than one object replaced with `PutMode::Update` (If-Match on its
//! ETag): object_store's `LocalFileSystem` does not implement `Update`, and `Create` is
//! implemented by every backend weft supports (S3 `If-None-Match: *`, supported by AWS since
//! August 2024 and by moto; a hard link on `file://`; atomic in `memory://`).
//!
//! Clock: expiry is compared with each compactor's own clock, so clocks must agree to well
//! within the TTL (default 1 minute). A holder checks its lease before every destructive
//! step and stops when it cannot renew; even two compactors working at once lose no data
//! (each deletes sources only after its own outputs are in the store), they only duplicate
//! work that the next run merges away.

use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use parking_lot::Mutex;

use crate::store::marker::{lease_prefix, parse_control_key, ControlKey};
use crate::store::{Store, StoreError};

/// A lease generation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds it.
    pub holder: String,
    /// Until when, wall clock ms since the epoch.
    pub expires_ms: i64,
}

impl LeaseRecord {
    /// `weft-compactor-lease 1\nholder <id>\nexpires_ms <ms>\n`.
    pub fn encode(&self) -> String {
        format!(
            "weft-compactor-lease 1\nholder {}\nexpires_ms {}\n",
            self.holder, self.expires_ms
        )
    }

    /// The inverse of [`encode`](Self::encode).
    pub fn decode(b: &[u8]) -> Option<LeaseRecord> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "weft-compactor-lease 1" {
            return None;
        }
        let holder = lines.next()?.strip_prefix("holder ")?.to_owned();
        let expires_ms = lines.next()?.strip_prefix("expires_ms ")?.parse().ok()?;
        if lines.next().is_some() || holder.is_empty() || holder.chars().any(char::is_control) {
            return None;
        }
        Some(LeaseRecord { holder, expires_ms })
    }
}

/// This process's view of the lease.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    dir: Path,
    holder: String,
    ttl: Duration,
    /// The generation we hold and when it expires.
    held: Mutex<Option<(u64, i64)>>,
}

/// Wall clock, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Lease {
    /// The lease of `store`'s prefix, as `holder`, each generation valid for `ttl`.
    pub fn new(store: Store, holder: String, ttl: Duration) -> Lease {
        Lease {
            dir: lease_prefix(store.prefix()),
            store,
            holder,
            ttl,
            held: Mutex::new(None),
        }
    }

    /// Our id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether we hold an unexpired generation, by our clock.
    pub fn is_held(&self) -> bool {
        self.held.lock().is_some_and(|(_, exp)| exp > now_ms())
    }

    /// Takes the lease if it is free or expired, renews it if it is ours; `Ok(false)` when
    /// another holder has it.
    pub async fn acquire(&self) -> Result<bool, StoreError> {
        let now = now_ms();
        let newest = self.newest().await?;
        let mine = *self.held.lock();
        let next = match &newest {
            None => 1,
            Some((gen, rec)) => {
                let ours = rec.holder == self.holder && mine.is_some_and(|(g, _)| g == *gen);
                if !ours && rec.expires_ms > now {
                    *self.held.lock() = None;
                    return Ok(false);
                }
                if !ours {
                    tracing::info!(previous = %rec.holder, generation = gen + 1, "taking over the compactor lease");
                }
                gen + 1
            }
        };
        let expires_ms = now.saturating_add(self.ttl.as_millis() as i64);
        let rec = LeaseRecord {
            holder: self.holder.clone(),
            expires_ms,
        };
        let path = self.gen_path(next);
        if !self
            .store
            .put_if_absent(&path, Bytes::from(rec.encode()))
            .await?
        {
            *self.held.lock() = None;
            return Ok(false);
        }
        *self.held.lock() = Some((next, expires_ms));
        // Older generations are history; delete them so the lease's listing stays short.
        if let Some((gen, _)) = newest {
            for g in gen.saturating_sub(8)..=gen {
                let _ = self.store.delete(&self.gen_path(g)).await;
            }
        }
        Ok(true)
    }

    /// Renews the lease if less than two thirds of its TTL is left; `Ok(false)` if it is
    /// not ours any more. Call before every destructive step.
    pub async fn ensure(&self) -> Result<bool, StoreError> {
        let left = self
            .held
            .lock()
            .map(|(_, exp)| exp.saturating_sub(now_ms()));
        match left {
            Some(ms) if ms > (self.ttl.as_millis() as i64) * 2 / 3 => Ok(true),
            Some(_) => self.acquire().await,
            None => Ok(false),
        }
    }

    /// Gives the lease up (a new generation that has already expired), so another
    /// compactor need not wait for the TTL. Best effort.
    pub async fn release(&self) {
        let Some((gen, _)) = self.held.lock().take() else {
            return;
        };
        let rec = LeaseRecord {
            holder: self.holder.clone(),
            expires_ms: 0,
        };
        let _ = self
            .store
            .put_if_absent(&self.gen_path(gen + 1), Bytes::from(rec.encode()))
            .await;
    }

    fn gen_path(&self, gen: u64) -> Path {
        self.dir.clone().join(format!("{gen:016x}"))
    }

    /// The newest generation and its record. A generation that cannot be decoded counts as
    /// expired (it is taken over).
    async fn newest(&self) -> Result<Option<(u64, LeaseRecord)>, StoreError> {
        let mut best: Option<u64> = None;
        let mut after: Option<Path> = None;
        loop {
            let page = self.store.list(&self.dir, after.as_ref()).await?;
            for m in &page.objects {
                if let Some(ControlKey::Lease(g)) =
                    parse_control_key(self.store.prefix(), &m.location)
                {
                    best = best.max(Some(g));
                }
            }
            after = page.objects.last().map(|m| m.location.clone());
            if !page.more || after.is_none() {
                break;
            }
        }
        let Some(gen) = best else { return Ok(None) };
        let rec = match self.store.get(&self.gen_path(gen)).await {
            Ok(b) => LeaseRecord::decode(&b).unwrap_or(LeaseRecord {
                holder: "?".into(),
                expires_ms: 0,
            }),
            // Deleted under us by a newer holder: look again next time.
            Err(StoreError::NotFound { .. }) => LeaseRecord {
                holder: "?".into(),
                expires_ms: i64::MAX,
            },
            Err(e) => return Err(e),
        };
        Ok(Some((gen, rec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn one_of_two_holders_gets_the_lease_and_the_other_takes_over_after_expiry() {
        let store = Store::open("memory://weft", &StoreOptions::default()).unwrap();
        let a = Lease::new(store.clone(), "a".into(), Duration::from_millis(300));
        let b = Lease::new(store.clone(), "b".into(), Duration::from_millis(300));
        assert!(a.acquire().await.unwrap());
        assert!(!b.acquire().await.unwrap(), "a holds it");
        assert!(a.acquire().await.unwrap(), "a renews");
        assert!(a.is_held());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            b.acquire().await.unwrap(),
            "a's lease expired; b takes over"
        );
        assert!(!a.acquire().await.unwrap(), "a lost it");
        assert!(!a.ensure().await.unwrap());
        b.release().await;
        assert!(a.acquire().await.unwrap(), "released: free at once");
    }

    #[tokio::test]
    async fn the_lease_works_on_a_local_directory_store() {
        // `file://` implements `PutMode::Create` (a hard link) but not `Update`: the lease
        // must work with the first alone.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&url, &StoreOptions::default()).unwrap();
        let a = Lease::new(store.clone(), "a".into(), Duration::from_secs(60));
        let b = Lease::new(store.clone(), "b".into(), Duration::from_secs(60));
        assert!(a.acquire().await.unwrap());
        assert!(!b.acquire().await.unwrap());
        assert!(a.acquire().await.unwrap(), "renewal");
        a.release().await;
        assert!(b.acquire().await.unwrap());
    }

    #[tokio::test]
    async fn racing_holders_never_both_win_one_generation() {
        for round in 0..20 {
            let store = Store::open("memory://weft", &StoreOptions::default()).unwrap();
            let ls: Vec<Lease> = (0..4)
                .map(|i| Lease::new(store.clone(), format!("h{i}"), Duration::from_secs(60)))
                .collect();
            let won = futures::future::join_all(ls.iter().map(|l| l.acquire())).await;
            let n = won.into_iter().filter(|r| *r.as_ref().unwrap()).count();
            assert_eq!(n, 1, "round {round}: {n} holders");
            assert_eq!(ls.iter().filter(|l| l.is_held()).count(), 1);
        }
    }

    proptest::proptest! {
        /// Any bytes (a lease generation is read back from a shared bucket): the decoder never
        /// panics, and what it accepts re-encodes to itself.
        #[test]
        fn lease_decoder_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if let Some(r) = LeaseRecord::decode(&bytes) {
                proptest::prop_assert_eq!(LeaseRecord::decode(r.encode().as_bytes()), Some(r));
            }
        }

        /// Records that look like the real thing round trip.
        #[test]
        fn lease_records_round_trip(holder in "[a-z0-9.-]{1,40}", expires_ms in proptest::prelude::any::<i64>()) {
            let r = LeaseRecord { holder, expires_ms };
            proptest::prop_assert_eq!(LeaseRecord::decode(r.encode().as_bytes()), Some(r));
        }
    }

    #[test]
    fn a_holder_with_a_control_character_does_not_decode() {
        assert_eq!(
            LeaseRecord::decode(b"weft-compactor-lease 1\nholder a\rb\nexpires_ms 5"),
            None
        );
    }

    #[test]
    fn a_record_round_trips_and_garbage_does_not_decode() {
        let r = LeaseRecord {
            holder: "x-1".into(),
            expires_ms: 42,
        };
        assert_eq!(LeaseRecord::decode(r.encode().as_bytes()), Some(r));
        assert_eq!(LeaseRecord::decode(b"nope"), None);
    }
}
