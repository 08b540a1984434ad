//! Which objects to compact together and which to delete: pure functions over a listing.
//!
//! **Invariant:** planning does no I/O and reads no clock; `now_ms` is an argument, so
//! every rule here is tested with plain data.

use std::time::Duration;

use crate::store::object::ObjectKey;

/// The ingester id of objects written by compaction at level `n` (1-based, one level per
/// `--compactor.block-ranges` entry) is this followed by `n`.
pub const COMPACTOR_ID_PREFIX: &str = "compactor-l";

/// An object of one tenant with its size.
pub type Listed = (ObjectKey, u64);

/// The compaction level of an object: 0 for a flushed object, `n` for one compaction wrote
/// at level `n`.
pub fn level_of(key: &ObjectKey) -> usize {
    key.ingester
        .strip_prefix(COMPACTOR_ID_PREFIX)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One compaction job: these objects of one tenant become one or more objects of `level`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// 1-based level: `block_ranges[level - 1]` is the block size.
    pub level: usize,
    /// The block index (`min_t` of the sources, floor-divided by the block size).
    pub block: i64,
    /// The sources, in key (time) order.
    pub sources: Vec<Listed>,
}

impl Job {
    /// Bytes of the sources.
    pub fn bytes(&self) -> u64 {
        self.sources.iter().map(|(_, s)| s).sum()
    }
}

/// What planning needs besides the listing.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// `--compactor.block-ranges`, increasing.
    pub block_ranges: Vec<Duration>,
    /// `--compactor.block-margin`: a block is compacted only once its end, and the newest
    /// sample of every source, is this much older than now.
    pub block_margin: Duration,
    /// The size outputs are cut at; an object of at least half of it at its level is full
    /// and not compacted again at that level.
    pub max_object_bytes: u64,
    /// Most source bytes one job reads (its memory bound).
    pub max_job_bytes: u64,
}

/// Objects of one tenant whose newest sample is older than `now_ms - retention`.
/// A zero retention keeps everything.
pub fn expired(objects: &[Listed], retention: Duration, now_ms: i64) -> Vec<Listed> {
    if retention.is_zero() {
        return Vec::new();
    }
    let cutoff = now_ms.saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
    objects
        .iter()
        .filter(|(k, _)| k.max_t < cutoff)
        .cloned()
        .collect()
}

/// The jobs for one tenant's objects. `skip` names objects that must not be touched (the
/// head still holds their chunks). Each object is in at most one job. Levels are planned
/// from the smallest block up; an object taken at one level waits for the next run before
/// a larger level can take it.
///
/// At level `n` with block size `R`, objects are grouped by `min_t / R`. A group is
/// compacted when its block ended more than the margin ago, every candidate's newest
/// sample is older than the margin, and it has at least two candidates: objects of a lower
/// level, and objects of level `n` that are not full. At most `max_job_bytes` of sources
/// go into one job, oldest first; the rest wait for the next run.
pub fn plan(
    objects: &[Listed],
    cfg: &PlanConfig,
    now_ms: i64,
    skip: &dyn Fn(&ObjectKey) -> bool,
) -> Vec<Job> {
    let margin = cfg.block_margin.as_millis().min(i64::MAX as u128) as i64;
    let ready_before = now_ms.saturating_sub(margin);
    let mut taken = std::collections::HashSet::new();
    let mut jobs = Vec::new();
    for (i, range) in cfg.block_ranges.iter().enumerate() {
        let level = i + 1;
        let r = (range.as_millis().min(i64::MAX as u128) as i64).max(1);
        let mut groups: std::collections::BTreeMap<i64, Vec<Listed>> = Default::default();
        for (k, size) in objects {
            let lv = level_of(k);
            let full = lv == level && *size >= cfg.max_object_bytes / 2;
            if lv > level || full || k.max_t >= ready_before || skip(k) || taken.contains(k) {
                continue;
            }
            if *size > cfg.max_job_bytes {
                continue;
            }
            groups
                .entry(k.min_t.div_euclid(r))
                .or_default()
                .push((k.clone(), *size));
        }
        for (block, mut group) in groups {
            let block_end = block.saturating_add(1).saturating_mul(r);
            if block_end > ready_before || group.len() < 2 {
                continue;
            }
            group.sort_by(|a, b| a.0.cmp(&b.0));
            let mut sources = Vec::new();
            let mut bytes = 0u64;
            for (k, s) in group {
                if bytes + s > cfg.max_job_bytes {
                    break;
                }
                bytes += s;
                sources.push((k, s));
            }
            // Two objects of this level that are not full and nothing older is a merge
            // worth doing too (they fill up); one object alone is not.
            if sources.len() < 2 {
                continue;
            }
            for (k, _) in &sources {
                taken.insert(k.clone());
            }
            jobs.push(Job {
                level,
                block,
                sources,
            });
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TenantId;

    const H: i64 = 3_600_000;

    fn key(min_t: i64, max_t: i64, ingester: &str, seq: u64) -> ObjectKey {
        ObjectKey::new(TenantId::parse("t").unwrap(), min_t, max_t, ingester, seq).unwrap()
    }

    fn cfg() -> PlanConfig {
        PlanConfig {
            block_ranges: vec![
                Duration::from_secs(2 * 3600),
                Duration::from_secs(24 * 3600),
            ],
            block_margin: Duration::from_secs(3600),
            max_object_bytes: 1000,
            max_job_bytes: 4000,
        }
    }

    fn none(_: &ObjectKey) -> bool {
        false
    }

    #[test]
    fn flushed_objects_of_a_finished_block_merge_at_the_first_level() {
        // Six 20-minute objects in block [0, 2h), two in [2h, 4h).
        let mut objs: Vec<Listed> = (0..6)
            .map(|i| (key(i * H / 3, (i + 1) * H / 3 - 1, "ing", i as u64), 100))
            .collect();
        objs.push((key(2 * H, 2 * H + 10, "ing", 7), 100));
        objs.push((key(3 * H, 3 * H + 10, "ing", 8), 100));
        // now = 4h: the first block ended 2h ago; the second ends now (within the margin).
        let jobs = plan(&objs, &cfg(), 4 * H, &none);
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].level, 1);
        assert_eq!(jobs[0].block, 0);
        assert_eq!(jobs[0].sources.len(), 6);
        // Later, both blocks are done at level 1; the day is not done at level 2 yet.
        let jobs = plan(&objs, &cfg(), 6 * H, &none);
        assert_eq!(jobs.len(), 2, "{jobs:?}");
    }

    #[test]
    fn level_one_outputs_merge_at_level_two_once_the_day_is_over() {
        let objs: Vec<Listed> = (0..12)
            .map(|i| {
                (
                    key(i * 2 * H, i * 2 * H + 2 * H - 1, "compactor-l1", i as u64),
                    100,
                )
            })
            .collect();
        assert!(
            plan(&objs, &cfg(), 24 * H, &none).is_empty(),
            "day not over + margin"
        );
        let jobs = plan(&objs, &cfg(), 26 * H, &none);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].level, 2);
        assert_eq!(jobs[0].sources.len(), 12);
        // Level-2 outputs are not compacted again by themselves if full.
        let full = vec![
            (key(0, H, "compactor-l2", 1), 900),
            (key(H, 2 * H, "compactor-l2", 2), 900),
        ];
        assert!(plan(&full, &cfg(), 100 * H, &none).is_empty());
    }

    #[test]
    fn skipped_recent_full_and_lone_objects_are_left_alone() {
        let objs = vec![
            (key(0, 10, "ing", 1), 100),
            (key(20, 30, "ing", 2), 100),
            (key(40, 50, "ing", 3), 100),
        ];
        // The head still holds object 2 and 3: one candidate left, no job.
        let skip = |k: &ObjectKey| k.seq >= 2;
        assert!(plan(&objs, &cfg(), 10 * H, &skip).is_empty());
        // A level-1 object alone with a full level-1 neighbour: nothing to do.
        let objs = vec![
            (key(0, 10, "compactor-l1", 1), 600),
            (key(20, 30, "compactor-l1", 2), 100),
        ];
        let c = PlanConfig {
            block_ranges: vec![Duration::from_secs(7200)],
            ..cfg()
        };
        assert!(plan(&objs, &c, 10 * H, &none).is_empty());
    }

    #[test]
    fn a_job_reads_at_most_its_byte_budget_oldest_first() {
        let objs: Vec<Listed> = (0..10)
            .map(|i| (key(i * 1000, i * 1000 + 10, "ing", i as u64), 900))
            .collect();
        let jobs = plan(&objs, &cfg(), 10 * H, &none);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].sources.len(), 4, "4 x 900 <= 4000");
        assert_eq!(jobs[0].sources[0].0.seq, 0);
        assert!(jobs[0].bytes() <= 4000);
    }

    #[test]
    fn retention_takes_objects_whose_newest_sample_is_older_than_the_cutoff() {
        let objs = vec![(key(0, 10 * H, "ing", 1), 1), (key(0, 20 * H, "ing", 2), 1)];
        let gone = expired(&objs, Duration::from_secs(5 * 3600), 20 * H);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0.seq, 1);
        assert!(expired(&objs, Duration::ZERO, 100 * H).is_empty());
    }

    #[test]
    fn levels_come_from_the_ingester_id() {
        assert_eq!(level_of(&key(0, 1, "ing-1", 0)), 0);
        assert_eq!(level_of(&key(0, 1, "compactor-l1", 0)), 1);
        assert_eq!(level_of(&key(0, 1, "compactor-l2", 0)), 2);
        assert_eq!(level_of(&key(0, 1, "compactor-lx", 0)), 0);
    }
}
