//! Out-of-order samples and sample look-ups: what makes retries safe and the
//! `--ingest.out-of-order-window` work.
//!
//! A series appends in order into its open chunk. A sample at or before the newest one is
//! looked up among the samples the head holds for the series (open chunk, out-of-order
//! buffer, closed chunks in memory or spilled):
//! - the same timestamp and value bits: a no-op that counts as written (a retry);
//! - the same timestamp, other bits: refused (`duplicate_timestamp`), naming both values;
//! - not held, newer than newest − window: kept in the series' out-of-order buffer;
//! - older than anything the series holds: refused as out of bounds (Mimir's
//!   `sample-out-of-bounds`: the head cannot tell whether the store has it);
//! - else refused as out of order (`out_of_order` with no window, `too_old` outside one,
//!   as Prometheus names them).
//!
//! The buffer holds up to [`OOO_CAP`] samples sorted by time (Prometheus's default
//! `out_of_order_cap`); full, or cut with the in-order chunk, it is encoded as an XOR chunk
//! and joins the closed chunks flagged out-of-order. Those overlap in-order chunks in time:
//! every reader merges (`query::merge`), the flusher uploads them like any closed chunk, and
//! replay never lets a flush mark cover them (see `Series::apply_flush_mark`).

use crate::chunk::XorIterator;

/// Most samples in a series' out-of-order buffer before it is encoded into a closed chunk.
pub const OOO_CAP: usize = 32;

/// A series' open out-of-order samples: sorted by timestamp, unique, at most [`OOO_CAP`].
#[derive(Debug, Default)]
pub(super) struct OooOpen {
    samples: Vec<(i64, u64)>,
}

impl OooOpen {
    /// The value bits at `t`, if held.
    pub(super) fn get(&self, t: i64) -> Option<u64> {
        self.samples
            .binary_search_by_key(&t, |s| s.0)
            .ok()
            .map(|i| self.samples[i].1)
    }

    /// Inserts a sample whose timestamp is not held yet.
    pub(super) fn insert(&mut self, t: i64, bits: u64) {
        match self.samples.binary_search_by_key(&t, |s| s.0) {
            Ok(_) => debug_assert!(false, "looked up before inserting"),
            Err(i) => {
                if self.samples.capacity() == 0 {
                    self.samples.reserve_exact(OOO_CAP);
                }
                self.samples.insert(i, (t, bits));
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// (first, last) timestamps, if any.
    pub(super) fn range(&self) -> Option<(i64, i64)> {
        Some((self.samples.first()?.0, self.samples.last()?.0))
    }

    /// The samples as an XOR chunk (the buffer is left as it is).
    pub(super) fn encode(&self) -> Vec<u8> {
        crate::chunk::encode(self.samples.iter().map(|&(t, v)| (t, f64::from_bits(v))))
    }

    /// Empties the buffer and gives back its memory.
    pub(super) fn clear(&mut self) {
        self.samples = Vec::new();
    }
}

/// The value bits at `t` in an XOR chunk, if it has a sample there. `None` also if the
/// chunk does not decode (it was validated when it was made or read).
pub(super) fn find_in_chunk(chunk: &[u8], t: i64) -> Option<u64> {
    let it = XorIterator::new(chunk).ok()?;
    for s in it {
        let (ts, v) = s.ok()?;
        if ts == t {
            return Some(v.to_bits());
        }
        if ts > t {
            return None;
        }
    }
    None
}

/// Whether `t` is inside the window: newer than `last − window_ms` (an inclusive bound, as
/// Prometheus's `t >= maxt - oooTimeWindow`).
pub(super) fn in_window(t: i64, last: i64, window_ms: i64) -> bool {
    window_ms > 0 && t >= last.saturating_sub(window_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_samples_sorted_and_encodes_them() {
        let mut o = OooOpen::default();
        for t in [50, 10, 30, 20, 40] {
            o.insert(t, (t as f64).to_bits());
        }
        assert_eq!(o.len(), 5);
        assert_eq!(o.range(), Some((10, 50)));
        assert_eq!(o.get(30), Some(30f64.to_bits()));
        assert_eq!(o.get(35), None);
        let bytes = o.encode();
        let got: Vec<(i64, f64)> = XorIterator::new(&bytes)
            .unwrap()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(
            got,
            vec![(10, 10.), (20, 20.), (30, 30.), (40, 40.), (50, 50.)]
        );
        assert_eq!(find_in_chunk(&bytes, 40), Some(40f64.to_bits()));
        assert_eq!(find_in_chunk(&bytes, 45), None);
        assert_eq!(find_in_chunk(&bytes, 60), None);
        o.clear();
        assert!(o.is_empty());
    }

    #[test]
    fn the_window_bound_is_inclusive_and_zero_disables_it() {
        assert!(in_window(900, 1000, 100));
        assert!(!in_window(899, 1000, 100));
        assert!(!in_window(999, 1000, 0));
        assert!(in_window(i64::MIN, i64::MIN + 5, i64::MAX));
    }
}
