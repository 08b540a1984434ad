//! Seeded workloads shared by the drills (kill -9, new ingester, store outage): where a
//! sample is decides its value, so a test can recompute what it sent instead of keeping it.
//!
//! A sample's place is (writer, tenant, series, t). Its value is a function of the seed and
//! that place ([`Workload::value_bits`]), and a push of one writer to one tenant holds all of
//! that writer's series at the same timestamps ([`Workload::encode_push`]).

use super::{encode_write_request_by_hand, labels, snappy, Labels, RawLabels, Samples};

/// The Prometheus stale marker: a signalling NaN with payload 2.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// SplitMix64: a stateless mix, so that a sample's value is a function of where it is.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One drill's series and values. The fields name the series (so that two drills never
/// read each other's data) and set how compressible the values are.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// `__name__` of every series.
    pub metric: &'static str,
    /// `job` of every series.
    pub job: &'static str,
    /// Series per writer (and tenant): `series="000"` to this, exclusive.
    pub series_per_writer: usize,
    /// Share (0–89) of samples that are arbitrary bit patterns, after the 11 % of special
    /// values. More makes chunks larger: 20 compresses about like a busy real target, 60
    /// makes chunks take about as many bytes a sample as the WAL.
    pub arbitrary_percent: u64,
}

impl Workload {
    /// The labels of series `series` of `writer` (the same in every tenant).
    pub fn series_labels(&self, writer: usize, series: usize) -> Labels {
        labels(&[
            ("__name__", self.metric),
            ("job", self.job),
            ("writer", &format!("w{writer}")),
            ("series", &format!("{series:03}")),
        ])
    }

    /// The value of series (`writer`, `tenant`, `series`) at `t`, as IEEE bits: mostly
    /// counter-like values, plus every special value the encoding must carry bit-exact (the
    /// stale marker, NaNs with other payloads and signs, ±Inf, -0.0) and arbitrary bit
    /// patterns. The tenant changes the counter-like values, so a read that crosses tenants
    /// shows as wrong values.
    pub fn value_bits(
        &self,
        seed: u64,
        writer: usize,
        tenant: usize,
        series: usize,
        t: i64,
    ) -> u64 {
        let place = ((writer as u64) << 48) ^ ((tenant as u64) << 40) ^ series as u64;
        let h = mix(mix(seed ^ mix(place)) ^ mix(t as u64));
        let payload = (h >> 13) & 0x0007_ffff_ffff_ffff;
        match h % 100 {
            0..=3 => STALE_NAN_BITS,
            4 | 5 => 0x7ff8_0000_0000_0000 | payload,
            6 => 0x7ff0_0000_0000_0000 | payload.max(1),
            7 => 0xfff8_0000_0000_0000 | payload,
            8 => f64::INFINITY.to_bits(),
            9 => f64::NEG_INFINITY.to_bits(),
            10 => (-0.0f64).to_bits(),
            p if p < 11 + self.arbitrary_percent => mix(h ^ 0x5555),
            _ => (((t / 1000) % 1_000_000) as f64 * (series + 1) as f64 + tenant as f64 * 0.5)
                .to_bits(),
        }
    }

    /// One push (snappy-compressed `WriteRequest`): every series of `writer` in `tenant`, at
    /// the timestamps `ts`, values from [`Workload::value_bits`].
    pub fn encode_push(&self, seed: u64, writer: usize, tenant: usize, ts: &[i64]) -> Vec<u8> {
        let all: Vec<Labels> = (0..self.series_per_writer)
            .map(|s| self.series_labels(writer, s))
            .collect();
        encode_push_of(all.iter().enumerate().map(|(s, labels)| {
            let samples = ts
                .iter()
                .map(|&t| (t, self.value_bits(seed, writer, tenant, s, t)))
                .collect();
            (labels, samples)
        }))
    }
}

/// A snappy-compressed `WriteRequest` of `series`. Encoded by hand rather than with prost:
/// proto3 encoders skip a value equal to 0.0, and -0.0 == 0.0, so prost would send -0.0 as
/// "no value", which decodes as +0.0.
pub fn encode_push_of<'a>(series: impl IntoIterator<Item = (&'a Labels, Samples)>) -> Vec<u8> {
    let raw: Vec<(RawLabels<'_>, Samples)> = series
        .into_iter()
        .map(|(labels, samples)| {
            let raw = labels
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect();
            (raw, samples)
        })
        .collect();
    snappy(&encode_write_request_by_hand(&raw))
}
