//! A real etcd for the ring tests: Debian's `etcd` (package `etcd-server`) on loopback, with
//! free ports and a temporary data directory, killed on drop.
//!
//! [`Etcd::pause`] (SIGSTOP) and [`Etcd::resume`] (SIGCONT) make it hang for real: the kernel
//! still accepts connections and buffers requests, but nothing answers, which is what a
//! client sees from an etcd whose disk stalls or whose machine froze. A missing `etcd` is a
//! skip, or a failure under `CI=true` (see [`super::require`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::s3::free_port;
use super::TempDir;

/// How long etcd may take to report healthy. It usually takes well under a second; a loaded
/// two-core machine running debug builds next to it can stretch that.
const ETCD_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at starting etcd: the free ports we pick may be taken by someone else before etcd
/// binds them, and then etcd exits at once.
const START_ATTEMPTS: usize = 3;
/// Lines of etcd's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// The etcd binary: `WEFT_TEST_ETCD` if set, otherwise `etcd` from the `PATH`.
fn etcd_binary() -> String {
    std::env::var("WEFT_TEST_ETCD").unwrap_or_else(|_| "etcd".to_string())
}

/// PEM files for an etcd that speaks TLS and asks clients for certificates.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// etcd's certificate (with `127.0.0.1` among its names).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that client certificates must chain to.
    pub ca: PathBuf,
}

/// A throwaway single-member etcd; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    client_port: u16,
    /// Where `/health` answers over plain HTTP (the client port, or with TLS the metrics
    /// port).
    health_port: u16,
    /// Whether clients must speak TLS.
    tls: bool,
    /// Where its data and its log live; kept when the test fails.
    dir: TempDir,
    /// Set while SIGSTOPped.
    paused: AtomicBool,
}

impl Etcd {
    /// Whether the etcd binary runs at all.
    pub fn available() -> bool {
        Command::new(etcd_binary())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts etcd and waits until `/health` says it is healthy. `None` means skip: etcd is
    /// missing and this is not CI.
    pub fn start() -> Option<Etcd> {
        Etcd::start_with(None)
    }

    /// Like [`Etcd::start`], with TLS on the client port when `tls` is given: etcd's
    /// certificate and key, the CA that clients' certificates must chain to (etcd's
    /// `--client-cert-auth`), so a client without a certificate is refused.
    pub fn start_with(tls: Option<&EtcdTls>) -> Option<Etcd> {
        if !super::require(
            "etcd",
            Etcd::available(),
            "apt-get install etcd-server (scripts/test.sh does it)",
        ) {
            return None;
        }
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Etcd::try_start(tls) {
                Ok(etcd) => return Some(etcd),
                Err(why) => {
                    eprintln!("etcd start attempt {attempt}/{START_ATTEMPTS} failed: {why}");
                    last_failure = why;
                }
            }
        }
        panic!("etcd did not start in {START_ATTEMPTS} attempts; last: {last_failure}");
    }

    fn try_start(tls: Option<&EtcdTls>) -> Result<Etcd, String> {
        let dir = TempDir::new("weft-etcd");
        let data = dir.path().join("data");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot clone the log file handle: {e}"))?;
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(etcd_binary());
        let mut health_port = client_port;
        if let Some(t) = tls {
            health_port = free_port();
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{health_port}"));
        }
        cmd.arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            // Nothing but the test uses it; no need to keep history around.
            .arg("--auto-compaction-retention")
            .arg("1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group, so that a signal to the group reaches it even if a
            // wrapper script started it.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", etcd_binary()))?;
        let mut etcd = Etcd {
            child,
            client_port,
            health_port,
            tls: tls.is_some(),
            dir,
            paused: AtomicBool::new(false),
        };
        let deadline = Instant::now() + ETCD_STARTUP_TIMEOUT;
        loop {
            if etcd.healthy() {
                return Ok(etcd);
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!(
                    "etcd exited ({status}) before it was healthy:\n{}",
                    etcd.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd was not healthy within {ETCD_STARTUP_TIMEOUT:?}:\n{}",
                    etcd.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`, what `--ring.etcd-endpoints` takes.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn port(&self) -> u16 {
        self.client_port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `GET /health` answers within a second with `"health":"true"`.
    pub fn healthy(&self) -> bool {
        health_body(self.health_port, Duration::from_secs(1))
            .is_ok_and(|body| body.replace(' ', "").contains("\"health\":\"true\""))
    }

    /// SIGSTOP: etcd stops answering anything (keepalives, watches, gets), without closing a
    /// single connection.
    ///
    /// Returns once the kernel reports the process stopped: kill(2) returns before every
    /// thread of a busy Go process has stopped, and a request may be answered meanwhile.
    pub fn pause(&self) {
        super::signal_group(&self.child, libc::SIGSTOP);
        self.paused.store(true, Ordering::SeqCst);
        self.wait_stopped(true);
    }

    /// SIGCONT: etcd answers again, starting with what queued up meanwhile.
    pub fn resume(&self) {
        super::signal_group(&self.child, libc::SIGCONT);
        self.paused.store(false, Ordering::SeqCst);
        self.wait_stopped(false);
    }

    /// Waits (at most 5 s) until `/proc/PID/stat` says the process is stopped (`T`), or no
    /// longer is.
    fn wait_stopped(&self, stopped: bool) {
        let path = format!("/proc/{}/stat", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // The state follows the command name, which is in parentheses.
            let state = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
                .and_then(|rest| rest.chars().next());
            if (state == Some('T')) == stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd (pid {}) is in state {state:?} 5 s after SIGSTOP/SIGCONT; want stopped = \
                 {stopped}",
                self.child.id()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Where etcd writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of etcd's log ({}) ----\n{}\n---- end of etcd ----",
                self.log_path().display(),
                self.log_tail()
            );
        }
        // SIGKILL ends a stopped process too; no SIGCONT needed.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: as in `super::signal_group`; the child has not been reaped yet.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// `GET /health` over plain HTTP/1.1 with a read timeout: the body, or why there is none.
fn health_body(port: u16, timeout: Duration) -> std::io::Result<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

/// Self-check of the harness: etcd starts healthy, stops answering while paused and answers
/// again once resumed. Run by the ring tests before they rely on it.
pub fn etcd_self_check(etcd: &Etcd) {
    assert!(etcd.healthy(), "a fresh etcd is not healthy");
    etcd.pause();
    let paused_answer = health_body(etcd.port(), Duration::from_millis(300));
    etcd.resume();
    assert!(
        paused_answer.is_err(),
        "a SIGSTOPped etcd answered /health: {paused_answer:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !etcd.healthy() {
        assert!(
            Instant::now() < deadline,
            "etcd not healthy 10 s after SIGCONT:\n{}",
            etcd.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
