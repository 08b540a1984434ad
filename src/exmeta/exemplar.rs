//! One tenant's exemplars: a circular buffer as Prometheus's `CircularExemplarStorage`
//! (`tsdb/exemplar.go`). Every stored exemplar is one slot of the ring, linked to the next
//! exemplar of its series; a per-series index holds the oldest and newest slot. A new
//! exemplar takes the slot after the last one written, evicting what was there (the oldest
//! exemplar of the whole tenant, which is also the oldest of its series).
//!
//! Rules, as Prometheus 3's: an exemplar equal to the newest one of its series (labels,
//! value, timestamp) is a duplicate and a no-op; exemplars of a series must come in order of
//! (timestamp, value, labels), so several at one timestamp are fine (the buckets of a native
//! histogram), and one that does not sort after the newest is out of order and refused;
//! exemplar labels may hold at most [`MAX_LABEL_RUNES`] runes, names and values together.
//!
//! One addition: an out-of-order exemplar equal to one of the [`DUPLICATE_LOOKBACK`] newest of
//! its series is a duplicate too, so a retried push (several exemplars a series) is a no-op
//! that counts as written rather than a run of refusals.
//!
//! Unlike Prometheus, the ring grows as it fills (up to its capacity) instead of being
//! allocated whole, so a tenant with few exemplars costs little.
//!
//! **Invariant:** the exemplars of a series, followed from `oldest` through `next`, are in
//! strictly increasing (timestamp, value, labels) order and end at `newest`; `prev` links
//! them back.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::Matcher;

/// Exemplar labels, names and values together, may have at most this many UTF-8 runes
/// (Prometheus's `exemplar.ExemplarMaxLabelSetLength`, from the OpenMetrics spec).
pub const MAX_LABEL_RUNES: usize = 128;

/// Label pairs, sorted by name.
pub type Pairs = Box<[(Box<str>, Box<str>)]>;

/// A series' labels, shared by its index entry and its exemplars.
pub type SeriesKey = Arc<[(Box<str>, Box<str>)]>;

/// How many of a series' newest exemplars an out-of-order one is compared with before it is
/// refused (a bound on the work under the lock).
pub const DUPLICATE_LOOKBACK: usize = 64;

/// No next slot.
const NONE: u32 = u32::MAX;
/// Estimated bytes of one slot besides its labels: the `Entry` (72), its labels' slice
/// allocation, and allocator slack (a full default ring measured about 1.2 times the
/// estimate with 96).
const ENTRY_OVERHEAD_BYTES: u64 = 128;
/// Estimated bytes of one index entry besides its labels: the map slot, the `Arc` header.
const SERIES_OVERHEAD_BYTES: u64 = 96;
/// Estimated bytes of one label pair besides its text: two `Box<str>` and their allocations.
const PAIR_OVERHEAD_BYTES: u64 = 48;

/// One exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels (e.g. `trace_id`), sorted by name.
    pub labels: Pairs,
    /// Its value.
    pub value: f64,
    /// Its timestamp, ms.
    pub t: i64,
}

impl Exemplar {
    /// Prometheus's `Exemplar.Equals`, with values compared bit for bit (so a NaN exemplar
    /// repeated is a duplicate too).
    fn same(&self, o: &Exemplar) -> bool {
        self.t == o.t && self.value.to_bits() == o.value.to_bits() && self.labels == o.labels
    }

    /// The order exemplars of a series must come in: timestamp, value, labels.
    pub(crate) fn order(&self, o: &Exemplar) -> std::cmp::Ordering {
        self.t
            .cmp(&o.t)
            .then(self.value.total_cmp(&o.value))
            .then_with(|| self.labels.cmp(&o.labels))
    }
}

/// Why an exemplar was not stored. [`Refusal::reason`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The tenant's capacity is 0.
    #[error("exemplar storage is disabled for this tenant")]
    Disabled,
    /// Labels longer than [`MAX_LABEL_RUNES`], or an empty label name.
    #[error("exemplar labels exceed {MAX_LABEL_RUNES} runes or have an empty name")]
    LabelLength,
    /// Labels that are not UTF-8.
    #[error("exemplar labels are not valid UTF-8")]
    InvalidLabels,
    /// Not newer than the newest exemplar of its series.
    #[error("out of order exemplar")]
    OutOfOrder,
    /// Its series is not in the head (refused, or never sent samples).
    #[error("exemplar of a series the head does not have")]
    UnknownSeries,
    /// Timestamped further past the wall clock than `--limits.creation-grace-period`: it
    /// would make every correct exemplar of its series out of order until evicted.
    #[error("exemplar too far in the future")]
    TooFarInFuture,
}

impl Refusal {
    /// Every reason, for the metric.
    pub const ALL: [Refusal; 6] = [
        Refusal::Disabled,
        Refusal::LabelLength,
        Refusal::InvalidLabels,
        Refusal::OutOfOrder,
        Refusal::UnknownSeries,
        Refusal::TooFarInFuture,
    ];

    /// The `reason` label of `weft_exemplars_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::LabelLength => "label_length",
            Refusal::InvalidLabels => "invalid_labels",
            Refusal::OutOfOrder => "out_of_order",
            Refusal::UnknownSeries => "unknown_series",
            Refusal::TooFarInFuture => "too_far_in_future",
        }
    }
}

/// What [`Ring::add`] did with an exemplar it did not refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored; `evicted` says whether the oldest exemplar made room for it.
    Stored {
        /// Whether an older exemplar was evicted.
        evicted: bool,
    },
    /// Equal to the newest exemplar of its series: nothing changed.
    Duplicate,
}

/// Checks Prometheus's label rule: at most [`MAX_LABEL_RUNES`] runes, no empty name.
pub fn check_labels(labels: &[(Box<str>, Box<str>)]) -> Result<(), Refusal> {
    let mut runes = 0usize;
    for (n, v) in labels {
        if n.is_empty() {
            return Err(Refusal::LabelLength);
        }
        runes += n.chars().count() + v.chars().count();
        if runes > MAX_LABEL_RUNES {
            return Err(Refusal::LabelLength);
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Entry {
    series: SeriesKey,
    ex: Exemplar,
    next: u32,
    /// The previous exemplar of the series; meaningless at the series' `oldest`.
    prev: u32,
}

#[derive(Debug, Clone, Copy)]
struct SeriesIdx {
    oldest: u32,
    newest: u32,
}

fn pairs_bytes(p: &[(Box<str>, Box<str>)]) -> u64 {
    p.iter()
        .map(|(n, v)| PAIR_OVERHEAD_BYTES + (n.len() + v.len()) as u64)
        .sum()
}

/// One tenant's exemplar ring.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    entries: Vec<Entry>,
    /// The slot the next exemplar takes.
    next: usize,
    index: HashMap<SeriesKey, SeriesIdx>,
    /// Estimated bytes held.
    bytes: u64,
}

impl Ring {
    /// An empty ring for at most `cap` exemplars (0: every add is refused).
    pub fn new(cap: usize) -> Self {
        Self {
            // Slots are u32 with one value reserved.
            cap: cap.min(NONE as usize),
            entries: Vec::new(),
            next: 0,
            index: HashMap::new(),
            bytes: 0,
        }
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Exemplars held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Series with at least one exemplar.
    pub fn num_series(&self) -> usize {
        self.index.len()
    }

    /// Estimated bytes held (label strings plus a fixed overhead per slot and series).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `ex` to `series` (sorted labels), evicting the oldest exemplar if full. The
    /// labels of `ex` must have passed [`check_labels`].
    pub fn add(&mut self, series: &[(Box<str>, Box<str>)], ex: Exemplar) -> Result<Added, Refusal> {
        if self.cap == 0 {
            return Err(Refusal::Disabled);
        }
        let key: SeriesKey = match self.index.get_key_value(series) {
            Some((k, idx)) => {
                let newest = &self.entries[idx.newest as usize].ex;
                if ex.order(newest).is_le() {
                    if self.recent_has(*idx, &ex) {
                        return Ok(Added::Duplicate);
                    }
                    return Err(Refusal::OutOfOrder);
                }
                k.clone()
            }
            None => series.into(),
        };
        let slot = self.next;
        let evicted = slot < self.entries.len();
        if evicted {
            // The slot's exemplar is the oldest of the ring, so the oldest of its series.
            let old = &self.entries[slot];
            let (old_key, old_next) = (old.series.clone(), old.next);
            self.bytes -= ENTRY_OVERHEAD_BYTES + pairs_bytes(&old.ex.labels);
            if old_next == NONE {
                self.index.remove(&*old_key);
                self.bytes -= SERIES_OVERHEAD_BYTES + pairs_bytes(&old_key);
            } else if let Some(idx) = self.index.get_mut(&*old_key) {
                idx.oldest = old_next;
            }
        }
        self.bytes += ENTRY_OVERHEAD_BYTES + pairs_bytes(&ex.labels);
        let s = slot as u32;
        let mut prev = NONE;
        match self.index.get_mut(&*key) {
            Some(idx) => {
                // `newest` is not `slot`: the evicted exemplar had a successor, or its series
                // entry is gone.
                self.entries[idx.newest as usize].next = s;
                prev = idx.newest;
                idx.newest = s;
            }
            None => {
                self.bytes += SERIES_OVERHEAD_BYTES + pairs_bytes(&key);
                self.index.insert(
                    key.clone(),
                    SeriesIdx {
                        oldest: s,
                        newest: s,
                    },
                );
            }
        }
        let entry = Entry {
            series: key,
            ex,
            next: NONE,
            prev,
        };
        if evicted {
            self.entries[slot] = entry;
        } else {
            if self.entries.len() == self.entries.capacity() {
                // Double, but never past the capacity.
                let more = self
                    .entries
                    .len()
                    .max(16)
                    .min(self.cap - self.entries.len());
                self.entries.reserve_exact(more);
            }
            self.entries.push(entry);
        }
        self.next = (slot + 1) % self.cap;
        Ok(Added::Stored { evicted })
    }

    /// Whether one of the [`DUPLICATE_LOOKBACK`] newest exemplars of the series is `ex`.
    fn recent_has(&self, idx: SeriesIdx, ex: &Exemplar) -> bool {
        let mut i = idx.newest;
        for _ in 0..DUPLICATE_LOOKBACK {
            let e = &self.entries[i as usize];
            if e.ex.same(ex) {
                return true;
            }
            if i == idx.oldest || e.ex.t < ex.t {
                return false;
            }
            i = e.prev;
        }
        false
    }

    /// Every exemplar, oldest (in the order the ring took them) first.
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, &Exemplar)> {
        let (a, b) = if self.entries.len() < self.cap {
            (&self.entries[..], &self.entries[..0])
        } else {
            let (head, tail) = self.entries.split_at(self.next);
            (tail, head)
        };
        a.iter().chain(b).map(|e| (&e.series, &e.ex))
    }

    /// A ring of capacity `cap` holding the newest `cap` exemplars of this one, and how many
    /// were dropped.
    pub fn resized(&self, cap: usize) -> (Ring, u64) {
        let mut r = Ring::new(cap);
        let skip = self.len().saturating_sub(r.cap);
        for (s, e) in self.iter().skip(skip) {
            let _ = r.add(s, e.clone());
        }
        (r, skip as u64)
    }

    /// The exemplars between `start` and `end` (ms, inclusive) of every series matched by
    /// one of `sets`, series sorted by labels, each series' exemplars oldest first.
    pub fn select(
        &self,
        sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Vec<(SeriesKey, Vec<Exemplar>)> {
        let mut out = Vec::new();
        for (key, idx) in &self.index {
            let oldest = &self.entries[idx.oldest as usize];
            if oldest.ex.t > end || self.entries[idx.newest as usize].ex.t < start {
                continue;
            }
            if !sets.iter().any(|ms| matches(key, ms)) {
                continue;
            }
            let mut found = Vec::new();
            let mut e = oldest;
            loop {
                if e.ex.t > end {
                    break;
                }
                if e.ex.t >= start {
                    found.push(e.ex.clone());
                }
                if e.next == NONE {
                    break;
                }
                e = &self.entries[e.next as usize];
            }
            if !found.is_empty() {
                out.push((key.clone(), found));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Checks the invariants (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut seen = 0;
        for (key, idx) in &self.index {
            let mut i = idx.oldest;
            let mut last_t = i64::MIN;
            loop {
                let e = &self.entries[i as usize];
                assert_eq!(&e.series, key);
                assert!(e.ex.t >= last_t, "series exemplars in time order");
                last_t = e.ex.t;
                if e.next != NONE {
                    assert_eq!(self.entries[e.next as usize].prev, i);
                }
                seen += 1;
                if e.next == NONE {
                    assert_eq!(i, idx.newest);
                    break;
                }
                i = e.next;
            }
        }
        assert_eq!(
            seen,
            self.entries.len(),
            "every slot belongs to one series chain"
        );
        let bytes: u64 = self
            .entries
            .iter()
            .map(|e| ENTRY_OVERHEAD_BYTES + pairs_bytes(&e.ex.labels))
            .sum::<u64>()
            + self
                .index
                .keys()
                .map(|k| SERIES_OVERHEAD_BYTES + pairs_bytes(k))
                .sum::<u64>();
        assert_eq!(bytes, self.bytes);
    }
}

fn matches(labels: &[(Box<str>, Box<str>)], ms: &[Matcher]) -> bool {
    ms.iter().all(|m| {
        let v = labels
            .iter()
            .find(|(n, _)| **n == *m.name)
            .map_or("", |(_, v)| &**v);
        m.matches(v)
    })
}
