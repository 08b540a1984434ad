//! Membership against a real etcd (`/usr/bin/etcd`): one throwaway server per test, on
//! loopback, with a 2 s heartbeat timeout. Without the binary the tests print that they are
//! skipped, unless `CI=true`, where they fail.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::*;

const ETCD: &str = "/usr/bin/etcd";
const HEARTBEAT: Duration = Duration::from_secs(2);

/// A throwaway etcd; killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    peer: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    /// Starts an etcd and waits until it answers; `None` (skip) if it is not installed.
    async fn start(test: &str) -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{ETCD} is missing and CI=true"
            );
            eprintln!("{test}: skipped, {ETCD} is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = spawn_etcd(dir.path(), &endpoint, &peer);
        let etcd = Etcd {
            child,
            endpoint,
            peer,
            dir,
        };
        etcd.wait_ready().await;
        Some(etcd)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_millis(500),
                Client::connect([&self.endpoint], None),
            )
            .await
            {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), c.get("probe", None)).await
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not answer in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills etcd (SIGKILL) and starts it again on the same ports and data.
    async fn restart_after(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tokio::time::sleep(down).await;
        self.child = spawn_etcd(self.dir.path(), &self.endpoint, &self.peer);
        self.wait_ready().await;
    }

    async fn client(&self) -> Client {
        Client::connect([&self.endpoint], None)
            .await
            .expect("etcd client")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with the pid of a child we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SAFETY: as in `signal`; a stopped process must be continued to die promptly.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_etcd(dir: &Path, endpoint: &str, peer: &str) -> Child {
    Command::new(ETCD)
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", endpoint])
        .args(["--advertise-client-urls", endpoint])
        .args(["--listen-peer-urls", peer])
        .args(["--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", &format!("t={peer}")])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd")
}

fn config(etcd: &Etcd, dir: &Path, id: &str, addr: &str) -> MembershipConfig {
    MembershipConfig {
        endpoints: vec![etcd.endpoint.clone()],
        prefix: "weft/".to_string(),
        instance_id: id.to_string(),
        instance_addr: addr.to_string(),
        zone: String::new(),
        heartbeat_timeout: HEARTBEAT,
        num_tokens: 16,
        tokens_file: dir.join(format!("{id}-tokens.json")),
        security: Default::default(),
    }
}

async fn start(cfg: MembershipConfig) -> (Arc<Membership>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let m = tokio::time::timeout(
        Duration::from_secs(10),
        Membership::start(cfg, 3, metrics.clone()),
    )
    .await
    .expect("start within 10 s")
    .expect("start");
    (m, metrics)
}

/// Starts `ids` (address `<id>:9201`), sets them ACTIVE, waits until each sees all ACTIVE.
async fn start_active(
    etcd: &Etcd,
    dir: &Path,
    ids: &[&str],
) -> Vec<(Arc<Membership>, Arc<Metrics>)> {
    let mut out = Vec::new();
    for id in ids {
        out.push(start(config(etcd, dir, id, &format!("{id}:9201"))).await);
    }
    for (m, _) in &out {
        m.set_state(InstanceState::Active)
            .await
            .expect("set ACTIVE");
    }
    for (m, _) in &out {
        assert!(
            m.wait_for(Duration::from_secs(5), |r| all_active(r, ids))
                .await,
            "{} sees {:?}",
            m.self_id(),
            ids_of(&m.ring())
        );
    }
    out
}

fn ids_of(ring: &Ring) -> Vec<(String, &'static str)> {
    ring.instances()
        .iter()
        .map(|i| (i.id.clone(), i.state.as_str()))
        .collect()
}

fn all_active(ring: &Ring, ids: &[&str]) -> bool {
    ring.instances().len() == ids.len()
        && ids.iter().all(|id| {
            ring.index_of(id)
                .is_some_and(|i| ring.instances()[i].state == InstanceState::Active)
        })
}

fn bad_entries(metrics: &Metrics) -> u64 {
    metrics
        .ring
        .etcd_errors
        .get_or_create(&ReasonLabels {
            reason: "bad_entry",
        })
        .get()
}

#[test]
fn backoff_doubles_and_is_capped_at_one_second() {
    let mut b = Backoff::new();
    let seen: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
    assert_eq!(seen, [100, 200, 400, 800, 1000, 1000, 1000]);
    b.reset();
    assert_eq!(b.next_delay(), MIN_BACKOFF);
}

#[test]
fn keepalive_is_a_third_of_the_ttl_and_calls_have_a_deadline() {
    let t = Timing::new(Duration::from_secs(15));
    assert_eq!(
        (t.ttl_secs, t.keepalive_every, t.call_timeout),
        (15, Duration::from_secs(5), Duration::from_secs(2))
    );
    let t = Timing::new(Duration::from_millis(300));
    assert_eq!(t.ttl_secs, 1, "etcd counts whole seconds, at least 1");
    assert_eq!(t.call_timeout, Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_a_leave_at_once_and_a_crash_after_the_ttl() {
    let Some(etcd) = Etcd::start("members_see_each_other").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ms = start_active(&etcd, dir.path(), &["a", "b", "c"]).await;
    let (a, b, c) = (&ms[0].0, &ms[1].0, &ms[2].0);
    let a_metrics = &ms[0].1;
    let active = a_metrics
        .ring
        .members
        .get_or_create(&StateLabels { state: "ACTIVE" })
        .get();
    assert_eq!(active, 3);
    assert_eq!(a_metrics.ring.etcd_up.get(), 1);
    let ppm = a_metrics.ring.owned_token_ppm.get();
    assert!(ppm > 0 && ppm < 1_000_000, "owned ppm {ppm}");
    assert!(a.status().etcd_up && a.status().lease_id != 0);

    // A leave is seen by the others at once, not after the TTL.
    let t = Instant::now();
    a.leave().await.expect("leave");
    for m in [b, c] {
        assert!(
            m.wait_for(Duration::from_secs(1), |r| r.index_of("a").is_none())
                .await,
            "{} still sees a after 1 s: {:?}",
            m.self_id(),
            ids_of(&m.ring())
        );
    }
    eprintln!("leave seen by both in {:?}", t.elapsed());
    assert!(a.ring().index_of("a").is_none(), "a's own ring drops a");

    // A crash (tasks gone, no leave): the entry stays until the lease expires.
    let t = Instant::now();
    c.crash();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.ring().index_of("c").is_some(), "c gone before its TTL");
    assert!(
        b.wait_for(HEARTBEAT + Duration::from_secs(3), |r| r
            .index_of("c")
            .is_none())
            .await,
        "c still in b's ring {:?} after the TTL",
        ids_of(&b.ring())
    );
    let gone_after = t.elapsed();
    eprintln!("crashed member gone after {gone_after:?} (TTL {HEARTBEAT:?})");
    assert!(gone_after >= Duration::from_millis(900), "{gone_after:?}");
    assert_eq!(ids_of(&b.ring()), [("b".to_string(), "ACTIVE")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_tokens_file_keeps_the_tokens() {
    let Some(etcd) = Etcd::start("restart_keeps_tokens").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&etcd, dir.path(), "a", "a:9201");
    let (a, _) = start(cfg.clone()).await;
    let first = a.ring().instances()[0].tokens.clone();
    assert_eq!(first.len(), 16);
    a.leave().await.unwrap();
    drop(a);

    let (a, _) = start(cfg).await;
    let ring = a.ring();
    let again = &ring.instances()[ring.index_of("a").unwrap()].tokens;
    assert_eq!(&first, again, "same tokens file, same tokens");

    // Another node (another file) gets tokens of its own.
    let (b, _) = start(config(&etcd, dir.path(), "b", "b:9201")).await;
    assert!(
        b.wait_for(Duration::from_secs(2), |r| r.instances().len() == 2)
            .await
    );
    let ring = b.ring();
    let b_tokens = &ring.instances()[ring.index_of("b").unwrap()].tokens;
    assert!(
        b_tokens.iter().all(|t| !first.contains(t)),
        "b took a's tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_duplicate_id_is_refused_and_a_restart_at_the_same_addr_takes_over() {
    let Some(etcd) = Etcd::start("duplicate_id").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start(config(&etcd, dir.path(), "a", "a:9201")).await;
    let old_lease = a.status().lease_id;

    let other = tempfile::tempdir().unwrap();
    let dup = Membership::start(
        config(&etcd, other.path(), "a", "elsewhere:9201"),
        3,
        Arc::new(Metrics::new()),
    )
    .await;
    assert!(
        matches!(dup, Err(RingError::DuplicateId(ref id)) if id == "a"),
        "{dup:?}"
    );

    // The same node restarting before its old lease expired (crash, then back at once).
    a.crash();
    let (a2, _) = start(config(&etcd, dir.path(), "a", "a:9201")).await;
    let new_lease = a2.status().lease_id;
    assert_ne!(new_lease, old_lease);
    // The old lease expiring must not take the new entry with it.
    tokio::time::sleep(HEARTBEAT + Duration::from_secs(1)).await;
    let mut c = etcd.client().await;
    let got = c.get("weft/ring/a", None).await.unwrap();
    assert_eq!(got.kvs().len(), 1, "entry gone with the old lease");
    assert_eq!(got.kvs()[0].lease(), a2.status().lease_id);
    assert!(a2.ring().index_of("a").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_entries_under_the_prefix_are_skipped() {
    let Some(etcd) = Etcd::start("garbage_skipped").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = etcd.client().await;
    c.put("weft/ring/junk", "garbage", None).await.unwrap();
    let liar = InstanceDesc {
        id: "other".to_string(),
        addr: "x:1".to_string(),
        zone: String::new(),
        state: InstanceState::Active,
        tokens: vec![1, 2, 3],
        registered_at_ms: 0,
        updated_at_ms: 0,
    };
    c.put("weft/ring/liar", liar.to_json(), None).await.unwrap();
    c.put("weft/elsewhere", "not under ring/", None)
        .await
        .unwrap();

    let (a, metrics) = start(config(&etcd, dir.path(), "a", "a:9201")).await;
    assert_eq!(ids_of(&a.ring()), [("a".to_string(), "JOINING")]);
    assert_eq!(
        bad_entries(&metrics),
        2,
        "one count per bad key and revision"
    );

    // While running: a good entry appears, then is overwritten by garbage.
    let x = InstanceDesc {
        id: "x".to_string(),
        ..liar.clone()
    };
    c.put("weft/ring/x", x.to_json(), None).await.unwrap();
    assert!(
        a.wait_for(Duration::from_secs(2), |r| r.index_of("x").is_some())
            .await
    );
    c.put("weft/ring/x", &b"{\"id\":\"x\""[..], None)
        .await
        .unwrap();
    assert!(
        a.wait_for(Duration::from_secs(2), |r| r.index_of("x").is_none())
            .await,
        "an unreadable new value replaces the old one"
    );
    assert_eq!(bad_entries(&metrics), 3);
    assert_eq!(ids_of(&a.ring()), [("a".to_string(), "JOINING")]);
    assert!(a.status().etcd_up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_frozen_past_the_ttl_keeps_the_ring_then_everyone_registers_again() {
    let Some(etcd) = Etcd::start("etcd_frozen").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ids = ["a", "b", "c"];
    let ms = start_active(&etcd, dir.path(), &ids).await;
    let leases_before: Vec<i64> = ms.iter().map(|(m, _)| m.status().lease_id).collect();

    etcd.freeze();
    let frozen = Instant::now();
    tokio::time::sleep(HEARTBEAT * 2).await;
    for (m, metrics) in &ms {
        let st = m.status();
        assert!(
            all_active(&st.ring, &ids),
            "{}: {:?}",
            m.self_id(),
            ids_of(&st.ring)
        );
        assert!(!st.etcd_up, "{}: etcd_up while etcd is frozen", m.self_id());
        assert_eq!(metrics.ring.etcd_up.get(), 0);
        let age = metrics.ring.ring_age_seconds.get();
        assert!(
            age >= 2,
            "{}: ring age {age} s after a 4 s freeze",
            m.self_id()
        );
    }
    // From the thaw on, record how small each member's ring gets and for how long it lacks
    // someone: etcd expires every lease at once, then each member registers again.
    let dips: Vec<Arc<Mutex<(usize, Duration)>>> = ms
        .iter()
        .map(|(m, _)| {
            let dip = Arc::new(Mutex::new((3, Duration::ZERO)));
            let (mut rx, out) = (m.subscribe(), dip.clone());
            tokio::spawn(async move {
                let mut short_since: Option<Instant> = None;
                loop {
                    let n = rx.borrow_and_update().instances().len();
                    {
                        let mut d = out.lock();
                        d.0 = d.0.min(n);
                        match (n < 3, short_since) {
                            (true, None) => short_since = Some(Instant::now()),
                            (false, Some(t)) => {
                                d.1 += t.elapsed();
                                short_since = None;
                            }
                            _ => {}
                        }
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
            dip
        })
        .collect();
    etcd.thaw();
    eprintln!("etcd frozen for {:?}", frozen.elapsed());

    let thawed = Instant::now();
    let deadline = thawed + Duration::from_secs(10);
    let mut c = etcd.client().await;
    loop {
        let regranted = ms.iter().all(|(m, _)| m.lease_regrants() >= 1);
        let all_see = ms.iter().all(|(m, _)| all_active(&m.ring(), &ids));
        let leases: Vec<i64> = ms.iter().map(|(m, _)| m.status().lease_id).collect();
        let in_etcd = match tokio::time::timeout(
            Duration::from_secs(1),
            c.get("weft/ring/", Some(GetOptions::new().with_prefix())),
        )
        .await
        {
            Ok(Ok(r)) => {
                r.kvs().len() == 3 && r.kvs().iter().zip(&leases).all(|(kv, l)| kv.lease() == *l)
            }
            _ => false,
        };
        if regranted && all_see && in_etcd {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered 10 s after the thaw: regranted {regranted}, all see all {all_see}, \
             in etcd {in_etcd}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the thaw", thawed.elapsed());
    for ((m, _), dip) in ms.iter().zip(&dips) {
        let (smallest, short_for) = *dip.lock();
        eprintln!(
            "{}: after the thaw its ring had {smallest} of 3 members at the least, and lacked \
             some for {short_for:?}",
            m.self_id()
        );
        assert!(smallest >= 1, "a member's own ring never lacks itself");
    }
    for ((m, metrics), before) in ms.iter().zip(leases_before) {
        let st = m.status();
        assert!(st.etcd_up);
        assert_ne!(
            st.lease_id,
            before,
            "{}: same lease after expiry",
            m.self_id()
        );
        assert_eq!(metrics.ring.etcd_up.get(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_waits_while_etcd_does_not_answer() {
    let Some(etcd) = Etcd::start("start_waits").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    etcd.freeze();
    let metrics = Arc::new(Metrics::new());
    let starting = tokio::spawn(Membership::start(
        config(&etcd, dir.path(), "a", "a:9201"),
        3,
        metrics.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!starting.is_finished(), "started against a frozen etcd");
    assert_eq!(metrics.ring.etcd_up.get(), 0);
    // Which call times out first depends on how far the start got before the freeze bit
    // (a loaded machine may still be connecting after 2.5 s): either is counted.
    let errors = |reason| {
        metrics
            .ring
            .etcd_errors
            .get_or_create(&ReasonLabels { reason })
            .get()
    };
    assert!(
        errors("get") + errors("connect") >= 1,
        "no get or connect error counted"
    );
    etcd.thaw();
    let a = tokio::time::timeout(Duration::from_secs(5), starting)
        .await
        .expect("started within 5 s of the thaw")
        .unwrap()
        .expect("start");
    assert_eq!(ids_of(&a.ring()), [("a".to_string(), "JOINING")]);
    assert_eq!(metrics.ring.etcd_up.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_members_reconnect_and_keep_the_ring() {
    let Some(mut etcd) = Etcd::start("etcd_restarted").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ids = ["a", "b"];
    let ms = start_active(&etcd, dir.path(), &ids).await;
    etcd.restart_after(Duration::from_millis(1500)).await;
    let restarted = Instant::now();
    // The ring was kept meanwhile; afterwards each member's entry is in etcd, under the lease
    // the member holds, and both still see both.
    let mut c = etcd.client().await;
    let deadline = restarted + Duration::from_secs(10);
    loop {
        let leases: Vec<i64> = ms.iter().map(|(m, _)| m.status().lease_id).collect();
        let in_etcd = match tokio::time::timeout(
            Duration::from_secs(1),
            c.get("weft/ring/", Some(GetOptions::new().with_prefix())),
        )
        .await
        {
            Ok(Ok(r)) => {
                r.kvs().len() == 2 && r.kvs().iter().zip(&leases).all(|(kv, l)| kv.lease() == *l)
            }
            _ => false,
        };
        let up = ms.iter().all(|(m, _)| m.status().etcd_up);
        let all_see = ms.iter().all(|(m, _)| all_active(&m.ring(), &ids));
        if in_etcd && up && all_see {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered 10 s after the restart: in etcd {in_etcd}, up {up}, all see {all_see}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    // A change made after the restart reaches the other member: its watch is live again.
    ms[0].0.set_state(InstanceState::Leaving).await.unwrap();
    assert!(
        ms[1]
            .0
            .wait_for(Duration::from_secs(2), |r| r
                .index_of("a")
                .is_some_and(|i| r.instances()[i].state == InstanceState::Leaving))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_together_pick_tokens_that_share_the_ring_evenly() {
    let Some(etcd) = Etcd::start("started_together").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ids = ["a", "b", "c", "d"];
    // All four read the empty ring at about the same moment; each must register tokens
    // picked for the ring as it is when it registers.
    let started = futures::future::join_all(
        ids.iter()
            .map(|id| start(config(&etcd, dir.path(), id, &format!("{id}:9201")))),
    )
    .await;
    let (m, _) = &started[0];
    assert!(
        m.wait_for(Duration::from_secs(5), |r| r.instances().len() == 4)
            .await
    );
    let ring = m.ring();
    let own = ring.ownership();
    eprintln!("ownership of a, b, c, d started together: {own:?}");
    for (i, share) in own.iter().enumerate() {
        assert!(
            (0.15..=0.35).contains(share),
            "{} owns {share:.3} of the ring (even: 0.25): {own:?}",
            ring.instances()[i].id
        );
    }
}
