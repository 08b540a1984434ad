//! An instance's tokens: picked to even out the ring, and kept across restarts in a file.
//!
//! **Picking** ([`generate`]): a joining instance should take `1/(N+1)` of the load and
//! take it from the instances that hold the most, both as primary owner and as one of the
//! `rf` replicas. The two differ: splitting a range `(a, b]` takes primary ownership from
//! the owner of `b`, but replica ownership from the instances that drop out of the replica
//! sets of the ranges just before it, which are others. A scheme that looks only at primary
//! ownership (split the busiest instance's largest range) left the busiest of 100 instances
//! at 1.003 × the mean as primary but 1.21 × as a replica, no better than random tokens
//! (1.22 and 1.12). So:
//!
//! - the first instance spreads its tokens evenly;
//! - the second to the `rf`-th instances take turns round the ring;
//! - every later instance places its tokens one at a time where each lowers the squared
//!   excesses over the fair shares the most, counting exactly who loses what (primary and
//!   replica), then places each of them again once the others are in place.
//!
//! With 100 instances of 128 tokens the busiest holds 1.002 × the mean of the token space,
//! as primary and as a replica; a join or a leave moves 1/N of the primaries and rf/N of
//! the replica sets (`examples/ring_sim.rs`, `docs/benchmarks.md`).
//!
//! With zones ([`generate_in_zone`]) and at least `rf` of them, each zone holds one replica
//! of every series, so an instance's load is its primary share of its own zone's instances,
//! and that is what is evened out.
//!
//! **The tokens file** (`<data-dir>/ring-tokens.json`): `{"tokens":[...]}`, so that a
//! restarted node takes back the ranges whose series its WAL holds.

use std::io::{Read, Write};
use std::path::Path;

use super::replicas::Ring;
use super::RingError;

/// The largest tokens file [`load`] reads: 65,536 tokens take about 720 KB as JSON, and a
/// file past this bound is not one this code wrote.
pub const MAX_TOKENS_FILE_BYTES: u64 = 4 << 20;

const SPACE: u64 = 1 << 32;

/// After placing its tokens one by one, [`generate`] takes each out and places it again
/// this many times, now that the others are in place: the first tokens were placed while
/// the new instance lacked everything. One pass takes the busiest instance of a ring grown
/// to 24 instances from 1.12 to 1.06 × the mean (as one of 3 replicas), and of one grown to
/// 100 from 1.015 to 1.002; a second pass did no better.
const REFINE_PASSES: usize = 1;

/// The replication factor [`generate`] evens the ring out for: the default of
/// `--ring.replication-factor`.
pub const DEFAULT_BALANCE_RF: usize = 3;

/// Picks `n` new tokens for an instance joining `ring` (none of them already taken).
///
/// Evens out the load both as primary owner and as one of [`DEFAULT_BALANCE_RF`] replicas;
/// [`generate_for_rf`] picks another replication factor.
pub fn generate(n: usize, ring: &Ring, seed: u64) -> Vec<u32> {
    generate_for_rf(n, ring, seed, DEFAULT_BALANCE_RF)
}

/// [`generate`] for an instance of zone `zone` (`--ring.zone`) in a ring whose series have
/// `rf` replicas: call this rather than [`generate`] when zones are set.
///
/// When the ring has at least `rf` zones, every series has exactly one replica in each zone
/// it is in, the first instance of that zone clockwise, so an instance's load is its primary
/// share of its own zone's sub-ring: the tokens are picked to even that out (as
/// [`generate_for_rf`] with rf 1 on the zone's instances). With fewer zones than `rf`, or no
/// zone, this is [`generate_for_rf`] on the whole ring. Never returns a token that any
/// instance, of any zone, holds.
pub fn generate_in_zone(n: usize, ring: &Ring, seed: u64, rf: usize, zone: &str) -> Vec<u32> {
    let mut zones: Vec<&str> = ring.instances().iter().map(|i| i.zone.as_str()).collect();
    zones.push(zone);
    zones.sort_unstable();
    zones.dedup();
    if zone.is_empty() || zones.len() < rf {
        return generate_for_rf(n, ring, seed, rf);
    }
    let same: Vec<_> = ring
        .instances()
        .iter()
        .filter(|i| i.zone == zone)
        .cloned()
        .collect();
    let mut out = generate_for_rf(n, &Ring::new(same), seed, 1);
    // Another zone may hold one of these (2⁻³² a pair): move it to a free neighbour. The
    // loop ends: fewer than 2³² tokens are taken.
    let taken = ring.tokens();
    for k in 0..out.len() {
        let mut t = out[k];
        while taken.binary_search(&t).is_ok() || out[..k].contains(&t) || out[k + 1..].contains(&t)
        {
            t = t.wrapping_add(1);
        }
        out[k] = t;
    }
    out.sort_unstable();
    out
}

/// [`generate`] for a ring whose series have `rf` replicas.
///
/// Every instance that owns tokens counts, whatever its state: a JOINING one is about to
/// take writes. `seed` places the first instance's tokens and breaks no other tie; the
/// result is sorted.
///
/// Each token is placed where it does the most good: for every range `(a, b]` of the ring
/// and the best size `s` for it, a new token at `a + s` moves `s` of primary ownership from the
/// owner of `b` to the new instance, and one range of replica ownership from each of the
/// `rf` instances that stop being a replica of it (the `rf - 1` ranges before `b` and the
/// new `(a, a + s]`). The placement that lowers the sum of squared excesses over the fair
/// share (`1/(N+1)` as primary, `rf/(N+1)` as replica, both relative) the most wins. Cost:
/// `O(n × ring tokens × rf²)`: 0.16 to 0.25 s for the 101st instance of 128 tokens each
/// (release build), about 20 times that in a debug build.
pub fn generate_for_rf(n: usize, ring: &Ring, seed: u64, rf: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    if ring.tokens().is_empty() {
        return evenly_spaced(n, seed);
    }
    let rf = rf.max(1);
    let count = ring.instances().len();
    let new = count as u32;
    let mut tokens = ring.tokens().to_vec();
    let mut owners = ring.token_owners().to_vec();
    let members = {
        let mut has = vec![false; count];
        owners.iter().for_each(|&o| has[o as usize] = true);
        has.iter().filter(|&&h| h).count()
    };
    if members < rf {
        return interleave(n, ring, rf.saturating_sub(members).max(1), seed);
    }
    let fair_primary = SPACE as f64 / (members + 1) as f64;
    let fair_replica = rf.min(members + 1) as f64 * fair_primary;

    let mut sizes: Vec<u64> = Vec::new();
    // sets[r * rf..][..rf]: the replica set of range r, in walk order (u32::MAX: none).
    let mut sets: Vec<u32> = Vec::new();
    let mut primary = vec![0f64; count + 1];
    let mut replica = vec![0f64; count + 1];
    let mut out = Vec::with_capacity(n);
    let mut set: Vec<u32> = Vec::with_capacity(rf);
    let mut losers: Vec<(u32, f64)> = Vec::with_capacity(2 * rf);
    for step in 0..n * (1 + REFINE_PASSES) {
        // After the first n, each step takes one of the new tokens out and places it again
        // with all the others in place.
        let mut removed = None;
        if step >= n {
            if out.len() < n {
                break;
            }
            let k = step % n;
            let at = tokens
                .binary_search(&out[k])
                .expect("a placed token is in the ring");
            tokens.remove(at);
            owners.remove(at);
            removed = Some(k);
        }
        // Exact loads of the ring as it is now, the new instance's tokens included.
        let t = tokens.len();
        sizes.clear();
        sizes.extend((0..t).map(|i| {
            if t == 1 {
                SPACE
            } else {
                u64::from(tokens[i].wrapping_sub(tokens[(i + t - 1) % t]))
            }
        }));
        primary.iter_mut().for_each(|x| *x = 0.0);
        replica.iter_mut().for_each(|x| *x = 0.0);
        sets.clear();
        for i in 0..t {
            primary[owners[i] as usize] += sizes[i] as f64;
            set.clear();
            for step in 0..t {
                let o = owners[(i + step) % t];
                if !set.contains(&o) {
                    set.push(o);
                    if set.len() == rf {
                        break;
                    }
                }
            }
            for &o in &set {
                replica[o as usize] += sizes[i] as f64;
            }
            sets.extend_from_slice(&set);
            sets.extend(std::iter::repeat_n(u32::MAX, rf - set.len()));
        }
        // Excess over the fair share, relative to it.
        let ep = |o: u32| (primary[o as usize] - fair_primary) / fair_primary;
        let er = |o: u32| (replica[o as usize] - fair_replica) / fair_replica;
        // Lowering a relative excess e by d lowers e² by 2ed - d².
        let gain = |e: f64, d: f64| 2.0 * e * d - d * d;
        // What the new instance still lacks, spread over the tokens it has left: each
        // token should bring about this much, neither all at once nor nothing.
        let left = if step < n { (n - step) as f64 } else { 1.0 };
        let want_p = (fair_primary - primary[new as usize]) / fair_primary / left;
        let want_r = (fair_replica - replica[new as usize]) / fair_replica / left;

        let mut best: Option<(f64, usize, u64)> = None;
        for i in 0..t {
            let size = sizes[i];
            let j = owners[i];
            if size < 2 || j == new {
                continue;
            }
            // Ranges before i whose walk reaches i before it has rf owners: the new
            // instance joins their set and the last member drops out.
            losers.clear();
            let mut moved = 0.0;
            let mut seen = 0usize;
            let mut distinct: [u32; 8] = [u32::MAX; 8];
            for back in 1..t {
                let r = (i + t - back) % t;
                let o = owners[r];
                if !distinct[..seen].contains(&o) {
                    if seen == rf.min(distinct.len()) {
                        break;
                    }
                    distinct[seen] = o;
                    seen += 1;
                    if seen == rf {
                        break;
                    }
                }
                let s_r = &sets[r * rf..(r + 1) * rf];
                if s_r.contains(&new) {
                    continue;
                }
                let d = sizes[r] as f64 / fair_replica;
                moved += d;
                let last = s_r[rf - 1];
                if last != u32::MAX {
                    match losers.iter_mut().find(|l| l.0 == last) {
                        Some(l) => l.1 += d,
                        None => losers.push((last, d)),
                    }
                }
            }
            let fixed: f64 = losers.iter().map(|&(o, d)| gain(er(o), d)).sum();
            // The split range (a, a + s] itself: the new instance replaces the last
            // member of its set, unless it is in it already.
            let s_i = &sets[i * rf..(i + 1) * rf];
            let z1_loser = if s_i.contains(&new) {
                None
            } else {
                Some(s_i[rf - 1])
            };
            let z1 = z1_loser.is_some();
            let e_last = z1_loser.filter(|&o| o != u32::MAX).map_or(0.0, er);
            // score(s) = gain(ep(j), s/P) - (s/P - want_p)² + fixed + [z1] gain(e_last, s/R)
            //            - (moved + [z1] s/R - want_r)²: a quadratic A s - B s² + C.
            let (fp, fr) = (fair_primary, fair_replica);
            let mut a = 2.0 * ep(j) / fp + 2.0 * want_p / fp;
            let mut b = 2.0 / (fp * fp);
            if z1 {
                a += 2.0 * e_last / fr - 2.0 * (moved - want_r) / fr;
                b += 2.0 / (fr * fr);
            }
            let s = (a / (2.0 * b)).clamp(1.0, (size - 1) as f64) as u64;
            let (dp, dr) = (s as f64 / fp, s as f64 / fr);
            let got_r = if z1 { moved + dr } else { moved };
            let mut score =
                gain(ep(j), dp) - (dp - want_p).powi(2) + fixed - (got_r - want_r).powi(2);
            if z1 {
                score += gain(e_last, dr);
            }
            if best.is_none_or(|(b, _, _)| score > b) {
                best = Some((score, i, s));
            }
        }
        let token = match (best, removed) {
            (Some((_, i, s)), _) => {
                let s = jitter(s, sizes[i], seed, step);
                tokens[(i + t - 1) % t].wrapping_add(s as u32)
            }
            (None, Some(k)) => out[k],
            (None, None) => break,
        };
        let at = tokens.partition_point(|&x| x < token);
        tokens.insert(at, token);
        owners.insert(at, new);
        match removed {
            Some(k) => out[k] = token,
            None => out.push(token),
        }
    }
    if out.len() < n {
        fill_randomly(&mut out, n, ring.tokens(), seed);
    }
    out.sort_unstable();
    out
}

/// The tokens of the second to `rf`-th instance of a ring: each of the `n` largest ranges
/// `(a, b]` gets a token at `a + (b - a) / (missing + 1)`, where `missing` is `rf` minus
/// the instances the ring has. With 128 evenly spread tokens for the first
/// instance, the first `rf` instances then follow each other round the ring in a fixed
/// order (0, 1, 2, 0, 1, 2, ...): the same pattern everywhere, which later joins can even
/// out. (While a ring has at most `rf` instances, every instance holds every series, so
/// their uneven primary shares cost nothing.) Halving the ranges instead leaves long runs
/// of two instances alternating, and every series in such a run has both of them among
/// its replicas: the first instance of a 100-instance ring then held 1.5 × the mean (in a
/// version of the generator without the second placement pass).
fn interleave(n: usize, ring: &Ring, missing: usize, seed: u64) -> Vec<u32> {
    let tokens = ring.tokens();
    let mut ranges: Vec<(u64, u32)> = ring
        .range_sizes()
        .zip(tokens.iter())
        .map(|(size, &end)| (size, end))
        .collect();
    // Largest first; among equal sizes, by position.
    ranges.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    let mut out: Vec<u32> = ranges
        .iter()
        .filter(|&&(size, _)| size >= 2)
        .take(n)
        .enumerate()
        .map(|(k, &(size, end))| {
            let step = jitter((size / (missing as u64 + 1)).max(1), size, seed, k);
            end.wrapping_sub((size % SPACE) as u32)
                .wrapping_add(step as u32)
        })
        .collect();
    if out.len() < n {
        fill_randomly(&mut out, n, tokens, seed);
    }
    out.sort_unstable();
    out
}

/// How far [`jitter`] moves a token at most, either way.
const JITTER: u64 = 200;

/// `s` moved by up to [`JITTER`] either way, as `seed` and `step` say, and kept within
/// `[1, size - 1]` so that the token stays inside its range.
///
/// Placement is otherwise a function of the ring alone, so two instances that join from the
/// same view of it (started together, as a StatefulSet with `podManagementPolicy: Parallel`
/// starts its pods) picked the very same tokens; the ring gives a token two instances claim
/// to the lower id, so the other owned nothing and took no writes, and every series had one
/// replica fewer (found by tests/ring_cluster.rs). A few hundred out of 2³² changes no
/// instance's share by more than a millionth. Two such instances still end up side by side
/// on the ring, and a token may still coincide (about 1 in 400). Membership now registers
/// tokens picked at start only if no ring entry changed since its read (else it picks again
/// from the new view), so instances started together no longer pick from one view; the
/// jitter remains as a second guard.
fn jitter(s: u64, size: u64, seed: u64, step: usize) -> u64 {
    if size < 3 {
        return s;
    }
    let r = splitmix64(seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) % (2 * JITTER + 1);
    (s + r).saturating_sub(JITTER).clamp(1, size - 1)
}

/// `n` tokens 2³²/n apart, from an offset that `seed` picks.
fn evenly_spaced(n: usize, seed: u64) -> Vec<u32> {
    let n = n.min(SPACE as usize);
    let offset = splitmix64(seed) as u32;
    let mut out: Vec<u32> = (0..n as u64)
        .map(|k| offset.wrapping_add((k * SPACE / n as u64) as u32))
        .collect();
    out.sort_unstable();
    out
}

/// Only for a ring so full that no range can be split: random free tokens.
fn fill_randomly(out: &mut Vec<u32>, n: usize, taken: &[u32], seed: u64) {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    // Bounded: a ring with fewer than n free tokens left gets what there is.
    for _ in 0..n.saturating_mul(64) {
        if out.len() >= n {
            break;
        }
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let t = splitmix64(state) as u32;
        if taken.binary_search(&t).is_err() && !out.contains(&t) {
            out.push(t);
        }
    }
}

/// splitmix64's output function: a seed to a well-mixed 64-bit value.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<u32>,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> RingError {
    RingError::TokensFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The tokens saved in `path`, if the file exists: sorted, unique.
///
/// A file that is not `{"tokens":[...]}` with at least one token in `0..2³²`, or is larger
/// than [`MAX_TOKENS_FILE_BYTES`], is an error that says why; it never panics.
pub fn load(path: &Path) -> Result<Option<Vec<u32>>, RingError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, format_args!("open: {e}"))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_TOKENS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(path, format_args!("read: {e}")))?;
    if bytes.len() as u64 > MAX_TOKENS_FILE_BYTES {
        return Err(file_error(
            path,
            format_args!("larger than {MAX_TOKENS_FILE_BYTES} bytes"),
        ));
    }
    decode(&bytes)
        .map(Some)
        .map_err(|reason| file_error(path, reason))
}

/// The tokens of a tokens file's bytes, sorted and unique, or why they are not valid.
pub fn decode(bytes: &[u8]) -> Result<Vec<u32>, String> {
    let file: TokensFile = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a tokens file ({{\"tokens\":[...]}}): {e}"))?;
    let mut tokens = file.tokens;
    if tokens.is_empty() {
        return Err("no tokens".to_string());
    }
    tokens.sort_unstable();
    tokens.dedup();
    Ok(tokens)
}

/// Saves `tokens` in `path` (atomically: a temporary file renamed over it, then synced).
///
/// The temporary file is `<path>.tmp` in the same directory; it is written and fsynced,
/// renamed over `path`, and then the directory is fsynced so that the rename survives a
/// crash. The tokens are saved sorted and unique.
pub fn save(path: &Path, tokens: &[u32]) -> Result<(), RingError> {
    let mut sorted = tokens.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let body = serde_json::to_vec(&TokensFile { tokens: sorted })
        .map_err(|e| file_error(path, format_args!("encode: {e}")))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| file_error(path, "not a file path"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };

    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(
            path,
            format_args!("write {}: {e}", tmp.display()),
        ));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(path, format_args!("rename: {e}")));
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(path, format_args!("sync dir {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{InstanceDesc, InstanceState};
    use proptest::prelude::*;

    fn inst(id: &str, tokens: Vec<u32>) -> InstanceDesc {
        InstanceDesc {
            id: id.to_string(),
            addr: format!("{id}:9090"),
            zone: String::new(),
            state: InstanceState::Active,
            tokens,
            registered_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn first_instance_spreads_its_tokens_evenly() {
        let t = generate(4, &Ring::default(), 7);
        assert_eq!(t.len(), 4);
        let ring = Ring::new(vec![inst("a", t)]);
        let sizes: Vec<u64> = ring.range_sizes().collect();
        assert!(sizes.iter().all(|&s| s == SPACE / 4), "{sizes:?}");
    }

    #[test]
    fn the_first_rf_instances_take_turns_round_the_ring() {
        let a = generate(16, &Ring::default(), 1);
        let ring = Ring::new(vec![inst("a", a.clone())]);
        let b = generate(16, &ring, 2);
        assert_eq!(b.len(), 16);
        assert!(b.iter().all(|t| a.binary_search(t).is_err()));
        let ring = Ring::new(vec![inst("a", a.clone()), inst("b", b.clone())]);
        let c = generate(16, &ring, 3);
        let ring = Ring::new(vec![inst("a", a), inst("b", b), inst("c", c)]);
        // a, b, c, a, b, c, ... each a third of the space.
        let owners: Vec<u32> = ring.token_owners().to_vec();
        let start = owners.iter().position(|&o| o == 0).unwrap();
        for k in 0..owners.len() {
            assert_eq!(
                owners[(start + k) % owners.len()],
                (k % 3) as u32,
                "{owners:?}"
            );
        }
        for own in ring.ownership() {
            assert!((own - 1.0 / 3.0).abs() < 1e-6, "{own}");
        }
    }

    #[test]
    fn instances_joining_from_the_same_view_pick_different_tokens() {
        //! Two instances started together see the same ring; they used to pick the same
        //! tokens, and the one with the higher id then owned nothing (tests/ring_cluster.rs).
        let a = generate(32, &Ring::default(), 1);
        let ring = Ring::new(vec![inst("a", a.clone())]);
        let b = generate(32, &ring, 1_179_251_943_118_461_393);
        let c = generate(32, &ring, 1_179_248_644_597_661_218);
        let shared = b.iter().filter(|t| c.binary_search(t).is_ok()).count();
        assert_eq!(shared, 0, "b {b:?}\nc {c:?}");
        let ring = Ring::new(vec![inst("a", a.clone()), inst("b", b), inst("c", c)]);
        assert_eq!(ring.active_count(), 3);
        for own in ring.ownership() {
            assert!(own > 0.0, "{:?}", ring.ownership());
        }
        let mut out = Vec::new();
        for k in 0..1000u32 {
            ring.write_replicas(k.wrapping_mul(4_294_967), 3, &mut out);
            assert_eq!(out.len(), 3, "token {k}: {out:?}");
        }
        // Later joins from one view, as a ring of ten started together.
        let mut insts = vec![inst("a", a)];
        for j in 0..3 {
            insts.push(inst(
                &format!("x{j}"),
                generate(32, &Ring::new(insts.clone()), 9),
            ));
        }
        let view = Ring::new(insts.clone());
        let together: Vec<Vec<u32>> = (0..6u64).map(|k| generate(32, &view, 100 + k)).collect();
        for (k, t) in together.into_iter().enumerate() {
            insts.push(inst(&format!("y{k}"), t));
        }
        let ring = Ring::new(insts);
        for (own, i) in ring.ownership().iter().zip(ring.instances()) {
            assert!(*own > 0.0, "{} owns nothing", i.id);
        }
    }

    #[test]
    fn with_rf_one_the_second_instance_takes_half() {
        let a = generate_for_rf(16, &Ring::default(), 1, 1);
        let ring = Ring::new(vec![inst("a", a.clone())]);
        let b = generate_for_rf(16, &ring, 2, 1);
        let ring = Ring::new(vec![inst("a", a), inst("b", b)]);
        let own = ring.ownership();
        assert!(
            (own[0] - 0.5).abs() < 1e-3 && (own[1] - 0.5).abs() < 1e-3,
            "{own:?}"
        );
    }

    /// A ring with no room left (every token taken up to a few) gives what is free and
    /// stops: no loop without end, no duplicate.
    #[test]
    fn a_nearly_full_ring_gives_only_free_tokens() {
        let ring = Ring::new(vec![inst("a", vec![0, 1, 2, 3]), inst("b", vec![5])]);
        // Ranges (3,5] of size 2 can give 4; (5, 0] can give many.
        let t = generate(8, &ring, 3);
        assert_eq!(t.len(), 8);
        let mut all: Vec<u32> = t.iter().chain(ring.tokens()).copied().collect();
        all.sort_unstable();
        let len = all.len();
        all.dedup();
        assert_eq!(all.len(), len);
    }

    /// With 3 zones and rf 3 every zone holds one replica of every series: the load of an
    /// instance is its share of its zone, which `generate_in_zone` evens out (random tokens:
    /// about 1.2 × the mean here).
    #[test]
    fn zoned_instances_share_their_zone_evenly() {
        let mut insts: Vec<InstanceDesc> = Vec::new();
        for i in 0..15 {
            let ring = Ring::new(insts.clone());
            let zone = format!("z{}", i % 3);
            let t = generate_in_zone(64, &ring, i as u64, 3, &zone);
            assert_eq!(t.len(), 64);
            assert!(t.iter().all(|x| ring.tokens().binary_search(x).is_err()));
            let mut d = inst(&format!("i{i:02}"), t);
            d.zone = zone;
            insts.push(d);
        }
        let ring = Ring::new(insts);
        let r = ring.replica_ownership(3);
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let max = r.iter().cloned().fold(0.0, f64::max);
        assert!(max / mean <= 1.02, "busiest/mean {} ({r:?})", max / mean);
    }

    #[test]
    fn save_then_load_round_trips_sorted_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring-tokens.json");
        assert!(load(&path).unwrap().is_none());
        save(&path, &[9, 3, 3, 7]).unwrap();
        assert_eq!(load(&path).unwrap(), Some(vec![3, 7, 9]));
        save(&path, &[1]).unwrap();
        assert_eq!(load(&path).unwrap(), Some(vec![1]));
        assert!(!dir.path().join("ring-tokens.json.tmp").exists());
    }

    #[test]
    fn load_sorts_and_dedups_a_hand_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, br#"{"tokens":[5, 1, 5, 4294967295]}"#).unwrap();
        assert_eq!(load(&path).unwrap(), Some(vec![1, 5, 4294967295]));
    }

    #[test]
    fn corrupt_tokens_files_are_errors_that_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        for (bytes, why) in [
            (&b""[..], "not a tokens file"),
            (b"{\"tokens\":[1,2", "not a tokens file"),
            (b"{\"tokens\":[-1]}", "not a tokens file"),
            (b"{\"tokens\":[4294967296]}", "not a tokens file"),
            (b"{\"tokens\":[]}", "no tokens"),
            (b"{\"tokenz\":[1]}", "not a tokens file"),
            (b"[1,2,3]", "not a tokens file"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            match load(&path) {
                Err(RingError::TokensFile { path: p, reason }) => {
                    assert!(reason.contains(why), "{bytes:?}: {reason}");
                    assert!(p.ends_with("t.json"));
                }
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_tokens_file_past_the_size_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut body = b"{\"tokens\":[1".to_vec();
        body.resize(MAX_TOKENS_FILE_BYTES as usize + 10, b' ');
        body.extend_from_slice(b"]}");
        std::fs::write(&path, &body).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_json(
            body in "\\{\"tokens\":\\[[0-9, \\-e.\"\\]\\[{}]{0,40}",
        ) {
            if let Ok(t) = decode(body.as_bytes()) {
                prop_assert!(!t.is_empty());
                prop_assert!(t.windows(2).all(|w| w[0] < w[1]));
            }
        }

        #[test]
        fn generated_tokens_are_new_and_unique(seed in any::<u64>(), joins in 1usize..6, n in 1usize..40) {
            let mut insts = Vec::new();
            for j in 0..joins {
                let ring = Ring::new(insts.clone());
                let t = generate(n, &ring, seed.wrapping_add(j as u64));
                prop_assert_eq!(t.len(), n);
                prop_assert!(t.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(t.iter().all(|x| ring.tokens().binary_search(x).is_err()));
                insts.push(inst(&format!("i{j}"), t));
            }
        }
    }
}
