//! [`Ring`]: an immutable snapshot of the ring, and the replica set of a token.
//!
//! **The token table.** Every token of every instance, sorted, each naming its owner. A
//! token that two instances claim belongs to the one with the lower id, so every node
//! builds the same table from the same entries whatever order etcd listed them in.
//! Instances without tokens are in [`Ring::instances`] but own nothing.
//!
//! **Ownership.** A token `t` of the ring owns the range `(previous ring token, t]`,
//! wrapping at 2³²: a series token belongs to the first ring token at or after it.
//!
//! **The replica set of a series token** ([`Ring::write_replicas`]): walk the table
//! clockwise from the first ring token at or after it (wrapping), and take each instance
//! that is not chosen yet and is ACTIVE, until there are `rf`. JOINING and LEAVING
//! instances take no writes; the walk goes past them to the next instance, so the set
//! still has `rf` members when `rf` ACTIVE instances exist (Cortex's extend-on-non-ACTIVE).
//! With fewer than `rf` ACTIVE instances the set is all of them.
//!
//! **Zones.** When any instance has a non-empty zone, the walk first takes at most one
//! instance per zone (an empty zone counts as a zone of its own). When fewer zones than
//! `rf` have an ACTIVE instance, the set is filled up with further distinct ACTIVE
//! instances, in the same clockwise order: the data is then replicated `rf` times but
//! the loss of one zone can take more than one replica with it.

use super::desc::{InstanceDesc, InstanceState};

/// A snapshot of the ring: the instances and their tokens, sorted for lookups.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    instances: Vec<InstanceDesc>,
    /// Every ring token, ascending, unique.
    tokens: Vec<u32>,
    /// `owners[i]`: the index (into `instances`) of the instance owning `tokens[i]`.
    owners: Vec<u32>,
    /// Each instance's zone as a small number; meaningful only when `zoned`.
    zone_of: Vec<u32>,
    /// Whether any instance has a non-empty zone.
    zoned: bool,
    /// ACTIVE instances that own at least one token.
    active_with_tokens: usize,
    /// Distinct zones among those instances.
    active_zones: usize,
}

impl Ring {
    /// The ring of these instances.
    ///
    /// Instances are sorted by id; should two entries carry the same id, the one updated
    /// last is kept (ties: the first in id-then-state order), so every node keeps the same.
    pub fn new(mut instances: Vec<InstanceDesc>) -> Ring {
        instances.sort_by(|a, b| {
            a.id.cmp(&b.id)
                .then(b.updated_at_ms.cmp(&a.updated_at_ms))
                .then(a.state.as_str().cmp(b.state.as_str()))
                .then(a.tokens.cmp(&b.tokens))
                .then(a.addr.cmp(&b.addr))
                .then(a.zone.cmp(&b.zone))
        });
        instances.dedup_by(|later, first| later.id == first.id);

        let total: usize = instances.iter().map(|i| i.tokens.len()).sum();
        let mut table: Vec<(u32, u32)> = Vec::with_capacity(total);
        for (idx, inst) in instances.iter().enumerate() {
            table.extend(inst.tokens.iter().map(|&t| (t, idx as u32)));
        }
        // Sorting by (token, index) and keeping the first of each token gives a token that
        // two instances claim to the lower id: indexes follow the ids.
        table.sort_unstable();
        table.dedup_by_key(|e| e.0);
        let (tokens, owners): (Vec<u32>, Vec<u32>) = table.into_iter().unzip();

        let zoned = instances.iter().any(|i| !i.zone.is_empty());
        let mut zone_names: Vec<&str> = instances.iter().map(|i| i.zone.as_str()).collect();
        zone_names.sort_unstable();
        zone_names.dedup();
        let zone_of: Vec<u32> = instances
            .iter()
            .map(|i| zone_names.binary_search(&i.zone.as_str()).unwrap_or(0) as u32)
            .collect();

        let mut has_tokens = vec![false; instances.len()];
        for &o in &owners {
            has_tokens[o as usize] = true;
        }
        let active: Vec<usize> = (0..instances.len())
            .filter(|&i| has_tokens[i] && instances[i].state == InstanceState::Active)
            .collect();
        let mut zones: Vec<u32> = active.iter().map(|&i| zone_of[i]).collect();
        zones.sort_unstable();
        zones.dedup();

        Ring {
            active_with_tokens: active.len(),
            active_zones: zones.len(),
            instances,
            tokens,
            owners,
            zone_of,
            zoned,
        }
    }

    /// The instances, sorted by id. Indexes into this slice name instances elsewhere.
    pub fn instances(&self) -> &[InstanceDesc] {
        &self.instances
    }

    /// The index of the instance with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.instances
            .binary_search_by(|i| i.id.as_str().cmp(id))
            .ok()
    }

    /// Every ring token, ascending, unique.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The owner (an instance index) of each of [`Ring::tokens`].
    pub fn token_owners(&self) -> &[u32] {
        &self.owners
    }

    /// Whether zones are in use (some instance has a non-empty zone).
    pub fn zoned(&self) -> bool {
        self.zoned
    }

    /// ACTIVE instances that own at least one token: the most a replica set can have.
    pub fn active_count(&self) -> usize {
        self.active_with_tokens
    }

    /// Every instance, whatever its state: the instances a read may need to ask, since a
    /// JOINING one may already hold pushes and a LEAVING one still holds its series.
    pub fn read_instances(&self) -> Vec<usize> {
        (0..self.instances.len()).collect()
    }

    /// The instances that take writes for `token`: up to `rf`, see the module docs. Clears
    /// `out` and fills it with instance indexes, primary first.
    ///
    /// Allocates nothing beyond `out`'s growth; the start is a binary search and the walk
    /// stops as soon as the set is complete.
    pub fn write_replicas(&self, token: u32, rf: usize, out: &mut Vec<usize>) {
        out.clear();
        let want = rf.min(self.active_with_tokens);
        if want == 0 {
            return;
        }
        let n = self.tokens.len();
        let start = self.tokens.partition_point(|&t| t < token);
        // First pass: distinct zones (when zoned), at most one instance per zone.
        let zone_want = if self.zoned {
            want.min(self.active_zones)
        } else {
            want
        };
        self.walk(start, n, zone_want, self.zoned, out);
        if out.len() < want {
            // Fewer zones than `rf`: fill up with other distinct instances.
            self.walk(start, n, want, false, out);
        }
    }

    fn walk(&self, start: usize, n: usize, want: usize, by_zone: bool, out: &mut Vec<usize>) {
        for step in 0..n {
            let mut i = start + step;
            if i >= n {
                i -= n;
            }
            let owner = self.owners[i] as usize;
            if self.instances[owner].state != InstanceState::Active || out.contains(&owner) {
                continue;
            }
            if by_zone {
                let zone = self.zone_of[owner];
                if out.iter().any(|&o| self.zone_of[o] == zone) {
                    continue;
                }
            }
            out.push(owner);
            if out.len() >= want {
                return;
            }
        }
    }

    /// The size of the range each ring token owns, `(previous token, token]`, wrapping; a
    /// lone token owns the whole space (2³²).
    pub fn range_sizes(&self) -> impl Iterator<Item = u64> + '_ {
        let n = self.tokens.len();
        (0..n).map(move |i| {
            if n == 1 {
                1u64 << 32
            } else {
                let prev = self.tokens[(i + n - 1) % n];
                u64::from(self.tokens[i].wrapping_sub(prev))
            }
        })
    }

    /// Each instance's share of the token space (sums to 1 when any instance has tokens).
    ///
    /// This is ownership as primary, whatever the instance's state.
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u64; self.instances.len()];
        for (i, size) in self.range_sizes().enumerate() {
            owned[self.owners[i] as usize] += size;
        }
        owned
            .into_iter()
            .map(|o| o as f64 / (1u64 << 32) as f64)
            .collect()
    }

    /// Each instance's share of the token space for which it is one of the `rf` write
    /// replicas. The shares sum to `min(rf, ACTIVE instances)`, so with `N` ACTIVE
    /// instances the mean is `rf / N`; non-ACTIVE instances get 0.
    pub fn replica_ownership(&self, rf: usize) -> Vec<f64> {
        let mut owned = vec![0u64; self.instances.len()];
        let mut set = Vec::with_capacity(rf);
        for (i, size) in self.range_sizes().enumerate() {
            self.write_replicas(self.tokens[i], rf, &mut set);
            for &o in &set {
                owned[o] += size;
            }
        }
        owned
            .into_iter()
            .map(|o| o as f64 / (1u64 << 32) as f64)
            .collect()
    }
}

#[cfg(test)]
mod tests;
