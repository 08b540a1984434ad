//! A push split by owner and sent to them; acknowledged on a durable quorum.
//!
//! The node that takes a push (any node) decodes it once, hashes each series onto the ring
//! ([`super::hash::series_token`]) and finds its replicas ([`Ring::write_replicas`]). Series
//! it owns itself are appended here, as a single node does; the others are re-encoded as
//! one remote-write 1.0 request per owner and sent with [`super::PEER_HEADER`], so the owner
//! applies them and never forwards them again. The push is acknowledged once every series
//! is durable on a quorum (`rf / 2 + 1`) of its replicas.
//!
//! Forwarding to one owner is bounded ([`ForwardLimits`]): requests in flight, body bytes in
//! flight, and the time of each. Over a bound the send fails at once (it never queues): the
//! replica counts as failed, and the other replicas decide. Everything is measured
//! (`weft_ring_forward_*`).
//!
//! What an owner's answer means:
//! - 2xx: every series it got is durable there;
//! - 400 and 429: it refused some series (named in the body) and made the rest durable (as
//!   a single weft answers a partly refused push);
//! - anything else, a timeout or no connection: nothing is known to be durable there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::desc::InstanceDesc;
use super::hash::series_token;
use super::replicas::Ring;
use super::PEER_HEADER;
use crate::metrics::{Metrics, PeerLabels, PeerResultLabels};
use crate::model::sort_and_drop_empty;
use crate::proto::WriteBatch;

/// Bounds on forwarding to one owner.
#[derive(Debug, Clone, Copy)]
pub struct ForwardLimits {
    /// Time one forwarded push may take (`--ring.forward-timeout`).
    pub timeout: Duration,
    /// Forwarded pushes in flight to one owner (`--ring.forward-max-inflight`).
    pub max_inflight: usize,
    /// Body bytes in flight to one owner (`--ring.forward-max-inflight-bytes`).
    pub max_inflight_bytes: u64,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_inflight: 64,
            max_inflight_bytes: 64 << 20,
        }
    }
}

/// Counts of what a push (or part of one) carries or what a node stored from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Float samples.
    pub samples: u64,
    /// Native histogram samples.
    pub histograms: u64,
    /// Exemplars.
    pub exemplars: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.samples += o.samples;
        self.histograms += o.histograms;
        self.exemplars += o.exemplars;
    }

    /// What `sent` less `written` leaves (never below zero).
    pub fn refused(sent: Counts, written: Counts) -> Counts {
        Counts {
            samples: sent.samples.saturating_sub(written.samples),
            histograms: sent.histograms.saturating_sub(written.histograms),
            exemplars: sent.exemplars.saturating_sub(written.exemplars),
        }
    }

    fn max(self, o: Counts) -> Counts {
        Counts {
            samples: self.samples.max(o.samples),
            histograms: self.histograms.max(o.histograms),
            exemplars: self.exemplars.max(o.exemplars),
        }
    }
}

/// What one replica made of its part of a push.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Durable there; `refusal` carries the status (400 or 429) and message of the series
    /// it refused, if any.
    Durable {
        /// What it stored.
        written: Counts,
        /// Its refusal, if it refused some series.
        refusal: Option<(u16, String)>,
    },
    /// Nothing known to be durable there.
    Failed {
        /// The status it answered, if it answered.
        status: Option<u16>,
        /// Why, for the log and the 503's message.
        reason: String,
    },
}

/// One owner's part of a push.
#[derive(Debug)]
pub struct Part {
    /// Index of the owner in the ring the plan was made with.
    pub instance: usize,
    /// Series (indexes into the batch's `series`) it gets.
    pub series: Vec<u32>,
    /// What they carry.
    pub counts: Counts,
}

/// Where every series of a push goes.
#[derive(Debug, Default)]
pub struct Plan {
    /// One part per owner, this node's own included (if it owns any of the series).
    pub parts: Vec<Part>,
    /// For each series of the batch, the indexes into `parts` of its replicas.
    targets: Vec<[u16; MAX_RF]>,
    /// How many of `targets[i]` are set.
    ntargets: Vec<u8>,
    /// What each series carries.
    series_counts: Vec<Counts>,
    /// Replicas that must be durable for a series to count as written.
    pub quorum: usize,
}

/// The `Content-Type` of a part [`encode_part`] makes.
pub const CONTENT_TYPE_V1: &str = "application/x-protobuf;proto=prometheus.WriteRequest";
/// The `Content-Type` of a remote-write 2.0 body forwarded as it came.
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// The largest replication factor weft takes.
pub const MAX_RF: usize = 15;

/// The quorum of `rf` replicas: a majority.
pub fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

/// Why a push cannot be planned: too few instances take writes.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the ring has {active} instance(s) taking writes; replication factor {rf} needs {quorum} \
     for a quorum"
)]
pub struct NoQuorum {
    /// ACTIVE instances found for the series.
    pub active: usize,
    /// The replication factor.
    pub rf: usize,
    /// The quorum it needs.
    pub quorum: usize,
}

impl Plan {
    /// Plans `batch` of `tenant` on `ring` with `rf` replicas. Fails when any series has
    /// fewer replicas than a quorum: nothing is sent then.
    pub fn new(
        ring: &Ring,
        rf: usize,
        tenant: &str,
        batch: &WriteBatch<'_>,
    ) -> Result<Plan, NoQuorum> {
        let rf = rf.clamp(1, MAX_RF);
        let quorum = quorum(rf);
        let mut plan = Plan {
            quorum,
            ..Plan::default()
        };
        let mut slot_of: HashMap<usize, u16> = HashMap::new();
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
        let mut replicas: Vec<usize> = Vec::with_capacity(rf);
        plan.targets.reserve(batch.series.len());
        for (i, s) in batch.series.iter().enumerate() {
            pairs.clear();
            pairs.extend_from_slice(&batch.labels[s.labels_start as usize..s.labels_end as usize]);
            sort_and_drop_empty(&mut pairs);
            let token = series_token(tenant, &pairs);
            ring.write_replicas(token, rf, &mut replicas);
            if replicas.len() < quorum {
                return Err(NoQuorum {
                    active: replicas.len(),
                    rf,
                    quorum,
                });
            }
            let counts = Counts {
                samples: s.num_samples() as u64,
                histograms: s.num_histograms() as u64,
                exemplars: s.num_exemplars() as u64,
            };
            let mut t = [0u16; MAX_RF];
            for (k, &inst) in replicas.iter().enumerate() {
                let slot = *slot_of.entry(inst).or_insert_with(|| {
                    plan.parts.push(Part {
                        instance: inst,
                        series: Vec::new(),
                        counts: Counts::default(),
                    });
                    (plan.parts.len() - 1) as u16
                });
                let part = &mut plan.parts[slot as usize];
                part.series.push(i as u32);
                part.counts.add(counts);
                t[k] = slot;
            }
            plan.targets.push(t);
            plan.ntargets.push(replicas.len() as u8);
            plan.series_counts.push(counts);
        }
        if batch.series.is_empty() {
            // Metadata alone (a sender may send it in requests of its own): it goes to the
            // replicas of its first family's name, best effort (no quorum is asked).
            if let Some(m) = batch.metadata.first() {
                let token = series_token(tenant, &[(b"__name__".as_slice(), m.family)]);
                ring.write_replicas(token, rf, &mut replicas);
                for &inst in &replicas {
                    plan.parts.push(Part {
                        instance: inst,
                        series: Vec::new(),
                        counts: Counts::default(),
                    });
                }
            }
        }
        Ok(plan)
    }

    /// The part of the instance at `index` in the ring, if it owns any series.
    pub fn part_of(&self, index: usize) -> Option<usize> {
        self.parts.iter().position(|p| p.instance == index)
    }

    /// Judges the outcomes (one per part, in order): the counts written (series that reached
    /// a quorum, less the most any durable replica refused), the series short of a quorum,
    /// and the first refusal.
    pub fn judge(&self, outcomes: &[Outcome]) -> Verdict {
        let mut v = Verdict::default();
        let mut refused = Counts::default();
        for (part, o) in self.parts.iter().zip(outcomes) {
            if let Outcome::Durable { written, refusal } = o {
                refused = refused.max(Counts::refused(part.counts, *written));
                if v.refusal.is_none() {
                    v.refusal = refusal.clone();
                }
            }
        }
        let mut written = Counts::default();
        for (i, t) in self.targets.iter().enumerate() {
            let n = self.ntargets[i] as usize;
            let durable = t[..n]
                .iter()
                .filter(|&&slot| matches!(outcomes[slot as usize], Outcome::Durable { .. }))
                .count();
            if durable >= self.quorum {
                written.add(self.series_counts[i]);
            } else {
                v.short_of_quorum += 1;
            }
        }
        v.written = Counts::refused(written, refused);
        v
    }
}

/// The result of a push over the ring.
#[derive(Debug, Default)]
pub struct Verdict {
    /// What was written (the `X-Prometheus-Remote-Write-*-Written` headers).
    pub written: Counts,
    /// Series that reached no quorum (the push gets 503 if any).
    pub short_of_quorum: usize,
    /// A replica's refusal of some series (status, message).
    pub refusal: Option<(u16, String)>,
}

/// Encodes the series `which` of `batch` (and all its metadata) as a remote-write 1.0
/// `WriteRequest`, snappy-compressed. Label bytes go as they came (they are checked by the
/// owner, which refuses what a single node would refuse).
pub fn encode_part(batch: &WriteBatch<'_>, which: &[u32]) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let mut out = Vec::new();
    let mut ts = Vec::new();
    for &i in which {
        let s = &batch.series[i as usize];
        ts.clear();
        for &(name, value) in &batch.labels[s.labels_start as usize..s.labels_end as usize] {
            encode_label(1, name, value, &mut ts);
        }
        for &(t, v) in &batch.samples[s.samples_start as usize..s.samples_end as usize] {
            // By hand rather than with prost's `Sample`: a proto3 encoder leaves out a value
            // equal to 0.0, and -0.0 == 0.0, so a -0.0 reached the owner as +0.0 (and a retry
            // of the same push was then refused there as a conflicting duplicate).
            let len = 1 + 8 + 1 + encoded_len_varint(t as u64);
            encode_key(2, WireType::LengthDelimited, &mut ts);
            encode_varint(len as u64, &mut ts);
            prost::encoding::double::encode(1, &v, &mut ts);
            prost::encoding::int64::encode(2, &t, &mut ts);
        }
        for e in &batch.exemplars[s.exemplars_start as usize..s.exemplars_end as usize] {
            let mut ex = Vec::new();
            for &(name, value) in
                &batch.exemplar_labels[e.labels_start as usize..e.labels_end as usize]
            {
                encode_label(1, name, value, &mut ex);
            }
            prost::encoding::double::encode(2, &e.value, &mut ex);
            prost::encoding::int64::encode(3, &e.timestamp, &mut ex);
            encode_key(3, WireType::LengthDelimited, &mut ts);
            encode_varint(ex.len() as u64, &mut ts);
            ts.extend_from_slice(&ex);
        }
        for (t, h) in &batch.histograms[s.histograms_start as usize..s.histograms_end as usize] {
            let p = crate::hist::to_prompb(*t, h);
            let mut hb = prost::Message::encode_to_vec(&p);
            // As for samples: prost leaves out a -0.0 `sum` or `zero_threshold` (equal to
            // the default 0.0). A repeated scalar field's last value wins, so add them.
            for (tag, v) in [(3u32, p.sum), (5, p.zero_threshold)] {
                if v.to_bits() == (-0.0f64).to_bits() {
                    prost::encoding::double::encode(tag, &v, &mut hb);
                }
            }
            encode_key(4, WireType::LengthDelimited, &mut ts);
            encode_varint(hb.len() as u64, &mut ts);
            ts.extend_from_slice(&hb);
        }
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(ts.len() as u64, &mut out);
        out.extend_from_slice(&ts);
    }
    for m in &batch.metadata {
        let mut md = Vec::new();
        prost::encoding::int32::encode(1, &(m.kind as i32), &mut md);
        prost::encoding::bytes::encode(2, &Bytes::copy_from_slice(m.family), &mut md);
        prost::encoding::bytes::encode(4, &Bytes::copy_from_slice(m.help), &mut md);
        prost::encoding::bytes::encode(5, &Bytes::copy_from_slice(m.unit), &mut md);
        encode_key(3, WireType::LengthDelimited, &mut out);
        encode_varint(md.len() as u64, &mut out);
        out.extend_from_slice(&md);
    }
    crate::proto::compress(&out)
}

/// A `prometheus.Label` (name = field 1, value = field 2) as field `tag`, from raw bytes.
fn encode_label(tag: u32, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let len = 1
        + encoded_len_varint(name.len() as u64)
        + name.len()
        + 1
        + encoded_len_varint(value.len() as u64)
        + value.len();
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(name.len() as u64, out);
    out.extend_from_slice(name);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// The bounds of one owner: permits for requests and for KiB of bodies.
#[derive(Debug)]
struct PeerSlot {
    addr: String,
    inflight: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

/// Sends parts of pushes to their owners, within [`ForwardLimits`].
#[derive(Debug)]
pub struct Forwarder {
    client: reqwest::Client,
    limits: ForwardLimits,
    peers: Mutex<HashMap<String, Arc<PeerSlot>>>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// A forwarder with these bounds.
    pub fn new(limits: ForwardLimits, metrics: Arc<Metrics>) -> Forwarder {
        let client = reqwest::Client::builder()
            .connect_timeout(limits.timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("a reqwest client without TLS always builds");
        Forwarder {
            client,
            limits,
            peers: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The HTTP client (shared with the read fan-out).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn slot(&self, peer: &InstanceDesc) -> Arc<PeerSlot> {
        let mut peers = self.peers.lock();
        match peers.get(&peer.id) {
            Some(s) if s.addr == peer.addr => s.clone(),
            _ => {
                let s = Arc::new(PeerSlot {
                    addr: peer.addr.clone(),
                    inflight: Arc::new(Semaphore::new(self.limits.max_inflight.max(1))),
                    kib: Arc::new(Semaphore::new(
                        (self.limits.max_inflight_bytes / 1024)
                            .clamp(1, Semaphore::MAX_PERMITS as u64)
                            as usize,
                    )),
                });
                peers.insert(peer.id.clone(), s.clone());
                s
            }
        }
    }

    /// Forgets owners that left the ring (their bounds and gauges).
    pub fn retain(&self, ring: &Ring) {
        let mut peers = self.peers.lock();
        peers.retain(|id, _| ring.index_of(id).is_some());
    }

    fn count(&self, peer: &str, result: &'static str) {
        self.metrics
            .ring
            .forward_requests
            .get_or_create(&PeerResultLabels {
                peer: peer.to_owned(),
                result,
            })
            .inc();
    }

    /// Sends one part (a snappy remote-write body of `content_type`, 1.0 or 2.0, carrying
    /// `counts`) to `peer` for `tenant`, within the bounds.
    pub async fn send(
        &self,
        peer: &InstanceDesc,
        tenant: &str,
        body: Bytes,
        content_type: &'static str,
        counts: Counts,
    ) -> Outcome {
        let slot = self.slot(peer);
        let Ok(_req) = slot.inflight.clone().try_acquire_owned() else {
            self.count(&peer.id, "rejected");
            return Outcome::Failed {
                status: None,
                reason: format!(
                    "{}: {} forwarded pushes already in flight (--ring.forward-max-inflight)",
                    peer.id, self.limits.max_inflight
                ),
            };
        };
        let kib = (body.len() as u64)
            .div_ceil(1024)
            .clamp(1, (self.limits.max_inflight_bytes / 1024).max(1));
        let Ok(_bytes) = slot.kib.clone().try_acquire_many_owned(kib as u32) else {
            self.count(&peer.id, "rejected");
            return Outcome::Failed {
                status: None,
                reason: format!(
                    "{}: more than {} bytes of forwarded pushes in flight \
                     (--ring.forward-max-inflight-bytes)",
                    peer.id, self.limits.max_inflight_bytes
                ),
            };
        };
        let labels = PeerLabels {
            peer: peer.id.clone(),
        };
        let inflight = self
            .metrics
            .ring
            .forward_inflight
            .get_or_create(&labels)
            .clone();
        let inflight_bytes = self
            .metrics
            .ring
            .forward_inflight_bytes
            .get_or_create(&labels)
            .clone();
        let len = body.len() as i64;
        inflight.inc();
        inflight_bytes.inc_by(len);
        let started = Instant::now();
        let sent = self
            .client
            .post(format!("http://{}/api/v1/push", peer.addr))
            .header("X-Scope-OrgID", tenant)
            .header(PEER_HEADER, "1")
            .header("Content-Type", content_type)
            .header("Content-Encoding", "snappy")
            .timeout(self.limits.timeout)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Err(e) => {
                let timeout = e.is_timeout();
                self.count(&peer.id, if timeout { "timeout" } else { "unreachable" });
                Outcome::Failed {
                    status: None,
                    reason: if timeout {
                        format!(
                            "{}: no answer within {:?} (--ring.forward-timeout)",
                            peer.id, self.limits.timeout
                        )
                    } else {
                        format!("{}: {}", peer.id, error_chain(&e))
                    },
                }
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let written = Counts {
                    samples: header("X-Prometheus-Remote-Write-Samples-Written")
                        .unwrap_or(counts.samples),
                    histograms: header("X-Prometheus-Remote-Write-Histograms-Written")
                        .unwrap_or(counts.histograms),
                    exemplars: header("X-Prometheus-Remote-Write-Exemplars-Written")
                        .unwrap_or(counts.exemplars),
                };
                let text = |resp: reqwest::Response| async move {
                    let t = resp.text().await.unwrap_or_default();
                    t.trim().chars().take(2048).collect::<String>()
                };
                if (200..300).contains(&status) {
                    self.count(&peer.id, "ok");
                    Outcome::Durable {
                        written,
                        refusal: None,
                    }
                } else if status == 400 || status == 429 {
                    self.count(&peer.id, "client_error");
                    Outcome::Durable {
                        written,
                        refusal: Some((status, text(resp).await)),
                    }
                } else {
                    self.count(&peer.id, "server_error");
                    Outcome::Failed {
                        status: Some(status),
                        reason: format!("{}: {} {}", peer.id, status, text(resp).await),
                    }
                }
            }
        };
        inflight.dec();
        inflight_bytes.dec_by(len);
        self.metrics
            .ring
            .forward_duration
            .observe(started.elapsed().as_secs_f64());
        if matches!(outcome, Outcome::Durable { .. }) {
            self.metrics
                .ring
                .forward_samples
                .inc_by(counts.samples + counts.histograms);
        }
        outcome
    }
}

/// An error and its sources, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_write_request, decompress, prompb};
    use prost::Message;

    fn plan_of(parts: usize, series: &[&[u16]], quorum: usize) -> Plan {
        let mut p = Plan {
            quorum,
            ..Plan::default()
        };
        for k in 0..parts {
            p.parts.push(Part {
                instance: k,
                series: Vec::new(),
                counts: Counts::default(),
            });
        }
        for (i, targets) in series.iter().enumerate() {
            let c = Counts {
                samples: 10,
                histograms: 1,
                exemplars: 2,
            };
            let mut t = [0u16; MAX_RF];
            for (j, &slot) in targets.iter().enumerate() {
                t[j] = slot;
                p.parts[slot as usize].series.push(i as u32);
                p.parts[slot as usize].counts.add(c);
            }
            p.targets.push(t);
            p.ntargets.push(targets.len() as u8);
            p.series_counts.push(c);
        }
        p
    }

    fn ok(part: &Part) -> Outcome {
        Outcome::Durable {
            written: part.counts,
            refusal: None,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            status: None,
            reason: "down".into(),
        }
    }

    #[test]
    fn a_series_is_written_once_a_quorum_of_its_replicas_is_durable() {
        let p = plan_of(4, &[&[0, 1, 2], &[1, 2, 3]], 2);
        // One replica of each down: both series have 2 of 3.
        let v = p.judge(&[ok(&p.parts[0]), failed(), ok(&p.parts[2]), ok(&p.parts[3])]);
        assert_eq!(v.short_of_quorum, 0);
        assert_eq!(v.written.samples, 20);
        assert_eq!(v.written.histograms, 2);
        // Parts 1 and 2 down: both series have only one durable replica.
        let v = p.judge(&[ok(&p.parts[0]), failed(), failed(), ok(&p.parts[3])]);
        assert_eq!(v.short_of_quorum, 2);
        assert_eq!(v.written, Counts::default());
        // Parts 0 and 1 down: only the first series is short.
        let v = p.judge(&[failed(), failed(), ok(&p.parts[2]), ok(&p.parts[3])]);
        assert_eq!(v.short_of_quorum, 1);
        assert_eq!(v.written.samples, 10);
    }

    #[test]
    fn a_replica_that_refused_samples_lowers_the_written_counts_and_names_why() {
        let p = plan_of(3, &[&[0, 1, 2], &[0, 1, 2]], 2);
        let refused = Outcome::Durable {
            written: Counts {
                samples: 15,
                histograms: 2,
                exemplars: 4,
            },
            refusal: Some((400, "series x: out of order".into())),
        };
        let v = p.judge(&[ok(&p.parts[0]), refused, ok(&p.parts[2])]);
        assert_eq!(v.short_of_quorum, 0);
        assert_eq!(v.written.samples, 15);
        assert_eq!(v.refusal.as_ref().map(|r| r.0), Some(400));
        assert!(v.refusal.unwrap().1.contains("out of order"));
    }

    fn label(n: &str, v: &str) -> prompb::Label {
        prompb::Label {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn a_part_carries_exactly_its_series_with_everything_they_hold() {
        let h = prompb::Histogram {
            count: Some(prompb::histogram::Count::CountInt(3)),
            sum: -0.0,
            schema: 1,
            zero_threshold: 1e-128,
            zero_count: Some(prompb::histogram::ZeroCount::ZeroCountInt(1)),
            positive_spans: vec![prompb::BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_deltas: vec![1, 0],
            timestamp: 7,
            ..Default::default()
        };
        let req = prompb::WriteRequest {
            timeseries: (0..4)
                .map(|i| prompb::TimeSeries {
                    labels: vec![
                        label("__name__", "m"),
                        label("i", &i.to_string()),
                        label("empty", ""),
                    ],
                    samples: vec![prompb::Sample {
                        value: f64::from_bits(0x7ff0_0000_0000_0002 + i as u64),
                        timestamp: i,
                    }],
                    exemplars: vec![prompb::Exemplar {
                        labels: vec![label("trace_id", "abc")],
                        value: 0.5,
                        timestamp: 3,
                    }],
                    histograms: if i == 2 { vec![h.clone()] } else { vec![] },
                })
                .collect(),
            metadata: vec![prompb::MetricMetadata {
                r#type: 1,
                metric_family_name: "m".into(),
                help: "help".into(),
                unit: "s".into(),
            }],
        };
        let body = req.encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&body, &mut batch).unwrap();
        // prost itself cannot send a -0.0 sum; the decoded batch can hold one (weft's own
        // decoder keeps it when a sender encodes it).
        match &mut batch.histograms[0].1 {
            crate::model::HistogramValue::Int(h) => h.sum = -0.0,
            crate::model::HistogramValue::Float(h) => h.sum = -0.0,
        }
        let part = encode_part(&batch, &[1, 2]);
        let raw = decompress(&part, 1 << 20).unwrap();
        let got = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
        let want = prompb::WriteRequest {
            timeseries: vec![req.timeseries[1].clone(), req.timeseries[2].clone()],
            metadata: req.metadata.clone(),
        };
        assert_eq!(got.timeseries.len(), 2);
        for (g, w) in got.timeseries.iter().zip(&want.timeseries) {
            assert_eq!(g.labels, w.labels);
            assert_eq!(g.exemplars, w.exemplars);
            assert_eq!(g.histograms, w.histograms);
            for (gh, wh) in g.histograms.iter().zip(&w.histograms) {
                assert_eq!(gh.sum.to_bits(), wh.sum.to_bits(), "sum bit-exact (-0.0)");
            }
            assert_eq!(g.samples.len(), 1);
            assert_eq!(g.samples[0].timestamp, w.samples[0].timestamp);
            assert_eq!(g.samples[0].value.to_bits(), w.samples[0].value.to_bits());
        }
        assert_eq!(got.metadata, want.metadata);
    }

    #[test]
    fn a_part_keeps_negative_zero_and_zero_timestamps_bit_exact() {
        //! A forwarded -0.0 used to arrive as +0.0: prost's `Sample` encoder leaves out a
        //! value equal to 0.0, and -0.0 == 0.0 (found by tests/ring_cluster.rs).
        let req = prompb::WriteRequest {
            timeseries: vec![prompb::TimeSeries {
                labels: vec![label("__name__", "m")],
                samples: vec![
                    prompb::Sample {
                        value: 1.0,
                        timestamp: 0,
                    },
                    prompb::Sample {
                        value: 2.0,
                        timestamp: 5,
                    },
                    prompb::Sample {
                        value: 3.0,
                        timestamp: -7,
                    },
                ],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let body = req.encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&body, &mut batch).unwrap();
        let want: Vec<(i64, u64)> = vec![
            (0, (-0.0f64).to_bits()),
            (5, 0.0f64.to_bits()),
            (-7, 0x7ff0_0000_0000_0002),
        ];
        for (slot, &(t, bits)) in batch.samples.iter_mut().zip(&want) {
            *slot = (t, f64::from_bits(bits));
        }
        let part = encode_part(&batch, &[0]);
        let raw = decompress(&part, 1 << 20).unwrap();
        let got = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
        let got: Vec<(i64, u64)> = got.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect();
        assert_eq!(got, want);
    }

    /// A peer that answers 204 after `delay`.
    async fn slow_peer(delay: Duration) -> String {
        let app = axum::Router::new().route(
            "/api/v1/push",
            axum::routing::post(move || async move {
                tokio::time::sleep(delay).await;
                axum::http::StatusCode::NO_CONTENT
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    fn peer(addr: &str) -> InstanceDesc {
        InstanceDesc {
            id: "p1".into(),
            addr: addr.into(),
            zone: String::new(),
            state: super::super::InstanceState::Active,
            tokens: vec![1],
            registered_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    /// Sends `n` zero bytes to `p` for tenant `t`.
    async fn send_zeros(f: &Forwarder, p: &InstanceDesc, n: usize) -> Outcome {
        f.send(
            p,
            "t",
            Bytes::from(vec![0; n]),
            CONTENT_TYPE_V1,
            Counts::default(),
        )
        .await
    }

    fn result_count(m: &Metrics, result: &'static str) -> u64 {
        m.ring
            .forward_requests
            .get_or_create(&PeerResultLabels {
                peer: "p1".into(),
                result,
            })
            .get()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwarding_is_bounded_in_flight_in_bytes_and_in_time() {
        let addr = slow_peer(Duration::from_millis(1500)).await;
        let metrics = Arc::new(Metrics::new());
        let f = Arc::new(Forwarder::new(
            ForwardLimits {
                timeout: Duration::from_millis(600),
                max_inflight: 1,
                max_inflight_bytes: 1 << 20,
            },
            metrics.clone(),
        ));
        let p = peer(&addr);
        let first = {
            let (f, p) = (f.clone(), p.clone());
            tokio::spawn(async move { send_zeros(&f, &p, 10).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // In flight: one. A second fails at once, without waiting.
        let started = Instant::now();
        let second = send_zeros(&f, &p, 10).await;
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(
            matches!(&second, Outcome::Failed { reason, .. } if reason.contains("in flight")),
            "{second:?}"
        );
        assert_eq!(result_count(&metrics, "rejected"), 1);
        // Time: the slow peer does not answer within the timeout.
        let first = first.await.unwrap();
        assert!(
            matches!(&first, Outcome::Failed { reason, .. } if reason.contains("no answer within")),
            "{first:?}"
        );
        assert_eq!(result_count(&metrics, "timeout"), 1);

        // Bytes: two bodies of 1.5 KiB against a 2 KiB budget: the second fails at once.
        let f = Arc::new(Forwarder::new(
            ForwardLimits {
                timeout: Duration::from_secs(5),
                max_inflight: 8,
                max_inflight_bytes: 2048,
            },
            metrics.clone(),
        ));
        let first = {
            let (f, p) = (f.clone(), p.clone());
            tokio::spawn(async move { send_zeros(&f, &p, 1500).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let g = metrics
            .ring
            .forward_inflight_bytes
            .get_or_create(&PeerLabels { peer: "p1".into() })
            .get();
        assert_eq!(g, 1500, "bytes in flight are measured");
        let second = send_zeros(&f, &p, 1500).await;
        assert!(
            matches!(&second, Outcome::Failed { reason, .. } if reason.contains("bytes")),
            "{second:?}"
        );
        assert!(matches!(first.await.unwrap(), Outcome::Durable { .. }));
        assert_eq!(result_count(&metrics, "ok"), 1);
        assert_eq!(result_count(&metrics, "rejected"), 2);
    }
}
