//! Shared harness for the integration tests: starts the real `weft` binary, talks HTTP to it,
//! and decodes what it answers.
//!
//! Every helper here checks the wire contract it relies on (status, content type, sort order,
//! frame CRCs) and panics with a message that says what was wrong, so that the tests
//! themselves read as data and expectations.
//!
//! Each integration test binary compiles this module on its own and uses a different subset
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use weft::proto::prompb::{
    ChunkEncoding, ChunkedReadResponse, Label, LabelMatcher, MatcherType, Query, ReadRequest,
    ReadResponse, ResponseType, WriteRequest,
};

/// etcd (a real one, on loopback) for the ring tests.
pub mod etcd;

/// moto (a real S3 server), a fault-injecting proxy in front of it, and a direct look into the
/// bucket.
pub mod s3;

/// Seeded workloads (values, labels, pushes) shared by the drills.
pub mod workload;

/// A series' labels as sorted `(name, value)` pairs. `Vec`'s ordering is exactly Prometheus's
/// `labels.Compare` (pairwise by name, then value; a prefix sorts first), so sorting by this
/// type gives the order the server must answer in.
pub type Labels = Vec<(String, String)>;

/// Samples as `(timestamp ms, IEEE bits of the value)`: bits, so that NaN payloads compare.
pub type Samples = Vec<(i64, u64)>;

/// One query's answer: series in the order the server sent them.
pub type SeriesSet = Vec<(Labels, Samples)>;

/// How long the binary may take to print its listen address and then to report ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Per-request timeout of the HTTP client. Generous: tests run against debug builds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of the server's stderr kept for printing when a test fails.
const LOG_TAIL_LINES: usize = 300;
/// Prometheus sends frames of at most 1 MiB, but may exceed it by one chunk and the series'
/// labels; anything far beyond that means the server does not split frames.
pub const MAX_FRAME_BYTES: usize = (1 << 20) + (64 << 10);

/// Sends `signal` to the process group that `child` leads (started with
/// `process_group(0)`), so that it reaches the server even behind a wrapper script.
pub fn signal_group(child: &Child, signal: i32) {
    let pgid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The group is the
    // one our child leads; the child is reaped only when its owner drops it, so the id
    // cannot have been reused.
    let rc = unsafe { libc::kill(-pgid, signal) };
    assert_eq!(
        rc,
        0,
        "kill(-{pgid}, {signal}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Whether we run in CI, where a missing component is a failure rather than a skip.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Returns true when the component is usable. When it is not: panics in CI, and otherwise
/// prints why the test is skipped and returns false.
pub fn require(component: &str, available: bool, hint: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{component} is missing and CI=true, so this is a failure, not a skip: {hint}");
    }
    eprintln!("SKIPPED: {component} is missing ({hint}); set CI=true to make this a failure");
    false
}

/// The random seed of a test: `WEFT_TEST_SEED` if set, otherwise from the clock. Printed so a
/// failing run can be repeated.
pub fn seed() -> u64 {
    let seed = match std::env::var("WEFT_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("WEFT_TEST_SEED={s:?} is not a u64: {e}")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock before 1970")
            .as_nanos() as u64,
    };
    eprintln!("seed = {seed} (repeat with WEFT_TEST_SEED={seed})");
    seed
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

/// A directory under the system temp dir, removed on drop unless the test is failing (then it
/// is kept and its path printed, for the post-mortem).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process that is killed (SIGKILL) and reaped when this guard drops, so that a failing
/// test never leaves servers behind. Its stderr is drained by a thread into a bounded tail.
#[derive(Debug)]
pub struct ProcessGuard {
    pub name: String,
    child: Child,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl ProcessGuard {
    /// Spawns `cmd` with stderr piped. Each stderr line goes to `on_line` (from the drain
    /// thread) and into the kept tail; `log_file`, if given, receives every line too.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log_file: Option<PathBuf>,
        on_line: impl Fn(&str) + Send + 'static,
    ) -> ProcessGuard {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stderr = child.stderr.take().expect("stderr was piped");
        let log_tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let tail = Arc::clone(&log_tail);
        let echo = std::env::var_os("WEFT_TEST_LOG").is_some();
        let label = name.to_string();
        std::thread::spawn(move || {
            let mut file = log_file.and_then(|p| std::fs::File::create(p).ok());
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            // Ends at EOF, which comes at the latest when the process is killed.
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = strip_ansi(&String::from_utf8_lossy(&buf));
                let line = line.trim_end().to_string();
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if echo {
                    eprintln!("[{label}] {line}");
                }
                on_line(&line);
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        ProcessGuard {
            name: name.to_string(),
            child,
            log_tail,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_tail(&self) -> String {
        let tail = self.log_tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // After SIGKILL the wait returns promptly.
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last stderr lines of {} (pid {}) ----\n{}\n---- end of {} ----",
                self.name,
                self.child.id(),
                self.log_tail(),
                self.name
            );
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // A CSI sequence ends with a byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses the port out of a line containing `listening on http://HOST:PORT`.
pub fn parse_listen_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    // The host may be an IPv6 literal in brackets; the port follows the last ':'.
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == ',')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    authority.rsplit(':').next()?.parse().ok()
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(8)
        .build()
        .expect("reqwest client")
}

fn collect(r: reqwest::Result<reqwest::blocking::Response>, what: &str) -> Resp {
    let mut r = r.unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let mut body = Vec::new();
    r.read_to_end(&mut body)
        .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
    Resp {
        status,
        headers,
        body,
    }
}

/// The headers Prometheus sends with a remote-write request (without the tenant).
pub const WRITE_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

const READ_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

pub fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy compress")
}

pub fn unsnappy(data: &[u8]) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Decoder::new().decompress_vec(data)
}

/// A running `weft serve` with its own data directory.
#[derive(Debug)]
pub struct Weft {
    pub port: u16,
    pub base: String,
    client: reqwest::blocking::Client,
    // Field order matters: the process is killed before its data directory is removed.
    process: ProcessGuard,
    data_dir: DataDir,
}

/// Where a [`Weft`] keeps its data.
#[derive(Debug)]
enum DataDir {
    /// A fresh temporary directory, removed with the server.
    Owned(TempDir),
    /// A directory the test keeps across restarts (see [`Weft::start_on`]); never removed here.
    Kept(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Owned(t) => t.path(),
            DataDir::Kept(p) => p,
        }
    }
}

impl Weft {
    /// Starts `weft serve --listen 127.0.0.1:0 --data-dir <temp>` plus `args`, and waits until
    /// it is listening and `/ready` answers 200.
    pub fn start(args: &[&str]) -> Weft {
        Weft::spawn(DataDir::Owned(TempDir::new("weft-it")), args, &[], None)
    }

    /// Starts `weft serve` on an existing data directory (which is kept when the server stops,
    /// so that a test can kill it and start it again on the same WAL), and waits until it is
    /// listening and `/ready` answers 200, that is, until WAL replay is done. Every stderr line
    /// also goes to `log_file` if given. The port changes on every start.
    pub fn start_on(data_dir: &Path, args: &[&str], log_file: Option<PathBuf>) -> Weft {
        Weft::spawn(DataDir::Kept(data_dir.to_path_buf()), args, &[], log_file)
    }

    fn spawn(
        data_dir: DataDir,
        args: &[&str],
        env: &[(String, String)],
        log_file: Option<PathBuf>,
    ) -> Weft {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(args)
            // The listen line must not be filtered away or colored by the caller's settings.
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (tx, rx) = mpsc::channel::<u16>();
        let tx = Mutex::new(Some(tx));
        let mut process = ProcessGuard::spawn("weft", cmd, log_file, move |line| {
            if let Some(port) = parse_listen_port(line) {
                if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(port);
                }
            }
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let port = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "weft closed stderr without printing `listening on http://…`\n{}",
                    process.log_tail()
                ),
            }
            if let Some(status) = process.exited() {
                // The drain thread may still be copying the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "weft exited ({status}) before listening; args {args:?}\n{}",
                    process.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "weft did not print `listening on http://…` within {STARTUP_TIMEOUT:?}"
            );
        };
        let base = format!("http://127.0.0.1:{port}");
        let weft = Weft {
            port,
            base,
            client: http_client(),
            process,
            data_dir,
        };
        weft.wait_ready(deadline);
        weft
    }

    fn wait_ready(&self, deadline: Instant) {
        loop {
            let last = match self.client.get(format!("{}/ready", self.base)).send() {
                Ok(r) if r.status().as_u16() == 200 => return,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "/ready did not answer 200 within {STARTUP_TIMEOUT:?}; last: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`, `libc::SIGTERM`) to the server. Only `&self`, so
    /// that writer threads may keep pushing to it while the test pulls the plug.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of ours. The pid is our
        // own child's, which we have not reaped yet (that happens only in `ProcessGuard`'s
        // drop or `wait_exit`), so it cannot have been reused by an unrelated process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the server to exit, and returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weft (pid {}) did not exit within {timeout:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pushes an already snappy-compressed `WriteRequest` body like [`Weft::push`] does, but
    /// with `client` and without panicking: a connection error (the server was killed) is an
    /// `Err`, an answer is its status and body text.
    pub fn try_push_body(
        &self,
        client: &reqwest::blocking::Client,
        tenant: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), String> {
        let mut rb = client.post(self.url("/api/v1/push"));
        for (k, v) in WRITE_HEADERS {
            rb = rb.header(k, v);
        }
        let r = rb
            .header("X-Scope-OrgID", tenant)
            .body(body)
            .send()
            .map_err(|e| format!("{e:#}"))?;
        let status = r.status().as_u16();
        let text = r.text().map_err(|e| format!("reading the body: {e:#}"))?;
        Ok((status, text))
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Pushes a `WriteRequest` exactly as Prometheus does.
    pub fn push(&self, tenant: &str, req: &WriteRequest) -> Resp {
        let mut headers = WRITE_HEADERS.to_vec();
        headers.push(("X-Scope-OrgID", tenant));
        self.push_raw(&headers, snappy(&req.encode_to_vec()))
    }

    /// Pushes and asserts 204.
    pub fn push_ok(&self, tenant: &str, req: &WriteRequest) {
        let r = self.push(tenant, req);
        assert_eq!(
            r.status,
            204,
            "push to tenant {tenant:?} failed: {}",
            r.text()
        );
    }

    /// POSTs `body` to `/api/v1/push` with exactly the given headers.
    pub fn push_raw(&self, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut rb = self.client.post(self.url("/api/v1/push"));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        collect(rb.body(body).send(), "push")
    }

    /// POSTs a remote-read request; `tenant` None sends no `X-Scope-OrgID`.
    pub fn read_raw(&self, tenant: Option<&str>, req: &ReadRequest) -> Resp {
        let mut rb = self.client.post(self.url("/api/v1/read"));
        for (k, v) in READ_HEADERS {
            rb = rb.header(k, v);
        }
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        collect(rb.body(snappy(&req.encode_to_vec())).send(), "read")
    }

    /// Remote read in SAMPLES mode. Checks that there is one result per query, that series
    /// are strictly sorted by labels, that each series' labels are sorted by name, and that
    /// every sample lies within the query's [start, end] in increasing time order.
    pub fn read_samples(&self, tenant: Option<&str>, queries: &[Query]) -> Vec<SeriesSet> {
        let req = ReadRequest {
            queries: queries.to_vec(),
            accepted_response_types: vec![ResponseType::Samples as i32],
        };
        let r = self.read_raw(tenant, &req);
        decode_samples(&r, queries)
    }

    /// Remote read in STREAMED_XOR_CHUNKS mode. Reads and CRC-checks every frame, checks frame
    /// size, query order, series order and chunk headers, merges a series split across frames,
    /// decodes the chunks, and keeps the samples within each query's [start, end].
    pub fn read_chunks(&self, tenant: Option<&str>, queries: &[Query]) -> Vec<SeriesSet> {
        self.read_chunks_counting_frames(tenant, queries).0
    }

    /// [`Weft::read_chunks`], also returning how many frames the answer took.
    pub fn read_chunks_counting_frames(
        &self,
        tenant: Option<&str>,
        queries: &[Query],
    ) -> (Vec<SeriesSet>, usize) {
        let req = ReadRequest {
            queries: queries.to_vec(),
            accepted_response_types: vec![
                ResponseType::StreamedXorChunks as i32,
                ResponseType::Samples as i32,
            ],
        };
        let r = self.read_raw(tenant, &req);
        decode_chunks(&r, queries)
    }

    /// Like [`Weft::read_chunks`] but returns the number of samples in each chunk per series
    /// (before range filtering), to check where chunks are cut.
    pub fn chunk_sizes(&self, tenant: Option<&str>, query: &Query) -> Vec<(Labels, Vec<usize>)> {
        let req = ReadRequest {
            queries: vec![query.clone()],
            accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
        };
        let r = self.read_raw(tenant, &req);
        assert_eq!(r.status, 200, "remote read (chunks) failed: {}", r.text());
        let mut out: Vec<(Labels, Vec<usize>)> = Vec::new();
        for msg in read_frames(&r.body) {
            let frame = ChunkedReadResponse::decode(msg).expect("ChunkedReadResponse");
            for cs in frame.chunked_series {
                let labels = to_labels(&cs.labels);
                let sizes: Vec<usize> = cs
                    .chunks
                    .iter()
                    .map(|c| {
                        weft::chunk::decode_bits(&c.data)
                            .expect("chunk decodes")
                            .len()
                    })
                    .collect();
                match out.last_mut() {
                    Some((prev, s)) if *prev == labels => s.extend(sizes),
                    _ => out.push((labels, sizes)),
                }
            }
        }
        out
    }

    /// GET of a Prometheus-API JSON endpoint: the status and the parsed body.
    pub fn api_get(
        &self,
        tenant: Option<&str>,
        path: &str,
        params: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut rb = self.client.get(self.url(path)).query(params);
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        let r = collect(rb.send(), path);
        let v = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "{path}: status {} with a body that is not JSON ({e}): {}",
                r.status,
                r.text()
            )
        });
        (r.status, v)
    }

    fn api_data(
        &self,
        tenant: Option<&str>,
        path: &str,
        matches: &[&str],
        extra: &[(&str, &str)],
    ) -> serde_json::Value {
        let mut params: Vec<(&str, &str)> = matches.iter().map(|m| ("match[]", *m)).collect();
        params.extend_from_slice(extra);
        let (status, v) = self.api_get(tenant, path, &params);
        assert_eq!(status, 200, "{path} {params:?}: {v}");
        assert_eq!(v["status"], "success", "{path} {params:?}: {v}");
        v["data"].clone()
    }

    /// `/api/v1/series`, as label maps in the order the server sent them.
    pub fn series(
        &self,
        tenant: Option<&str>,
        matches: &[&str],
        range: &[(&str, &str)],
    ) -> Vec<BTreeMap<String, String>> {
        let data = self.api_data(tenant, "/api/v1/series", matches, range);
        serde_json::from_value(data.clone()).unwrap_or_else(|e| {
            panic!("/api/v1/series data is not a list of label maps ({e}): {data}")
        })
    }

    /// `/api/v1/labels`.
    pub fn labels(
        &self,
        tenant: Option<&str>,
        matches: &[&str],
        range: &[(&str, &str)],
    ) -> Vec<String> {
        let data = self.api_data(tenant, "/api/v1/labels", matches, range);
        serde_json::from_value(data.clone()).unwrap_or_else(|e| {
            panic!("/api/v1/labels data is not a list of strings ({e}): {data}")
        })
    }

    /// `/api/v1/label/<name>/values`.
    pub fn label_values(&self, tenant: Option<&str>, name: &str, matches: &[&str]) -> Vec<String> {
        let path = format!("/api/v1/label/{name}/values");
        let data = self.api_data(tenant, &path, matches, &[]);
        serde_json::from_value(data.clone())
            .unwrap_or_else(|e| panic!("{path} data is not a list of strings ({e}): {data}"))
    }

    /// Ring mode: waits (at most 30 s) until this node's `/ring?format=json` shows `n`
    /// instances ACTIVE.
    pub fn wait_ring_active(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = collect(
                self.client.get(self.url("/ring?format=json")).send(),
                "/ring",
            );
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let active = v["instances"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|i| i["state"] == "ACTIVE").count());
            if active == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ring never had {n} ACTIVE: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `/metrics` exposition text.
    pub fn metrics(&self) -> String {
        let r = collect(self.client.get(self.url("/metrics")).send(), "/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        r.text()
    }

    /// Sum of the samples of metric `name` carrying all of `labels`, from a fresh scrape.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    /// A valid push and read-back on a tenant of its own: proves the server still works.
    pub fn assert_still_serves(&self, tag: &str) {
        let tenant = "health-check";
        let t = now_ms();
        let labels = vec![
            ("__name__".to_string(), "weft_test_health".to_string()),
            ("tag".to_string(), tag.to_string()),
        ];
        let req = WriteRequest {
            timeseries: vec![series_proto(&labels, &[(t, 42.5f64.to_bits())])],
            metadata: vec![],
        };
        let r = self.push(tenant, &req);
        assert_eq!(
            r.status,
            204,
            "server no longer accepts a valid push after {tag}: {}",
            r.text()
        );
        let got = self.read_samples(
            Some(tenant),
            &[query(t, t, vec![matcher(MatcherType::Eq, "tag", tag)])],
        );
        assert_eq!(
            got[0],
            vec![(labels, vec![(t, 42.5f64.to_bits())])],
            "server no longer reads back after {tag}"
        );
    }
}

#[derive(Debug, Clone)]
struct ChunkInfo {
    samples: Samples,
}

/// Splits a streamed remote-read body into messages, checking each frame's CRC32C and size.
pub fn read_frames(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    // Each frame consumes at least 5 bytes, so this ends.
    while !rest.is_empty() {
        let (len, n) = uvarint(rest)
            .unwrap_or_else(|| panic!("frame {}: bad uvarint length prefix", out.len()));
        let len = usize::try_from(len).expect("frame length fits usize");
        assert!(
            len <= MAX_FRAME_BYTES,
            "frame {} is {len} bytes, over ~1 MiB",
            out.len()
        );
        rest = &rest[n..];
        assert!(
            rest.len() >= 4 + len,
            "frame {}: truncated ({} bytes left, need {})",
            out.len(),
            rest.len(),
            4 + len
        );
        let crc = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        let msg = &rest[4..4 + len];
        assert_eq!(
            crc,
            crc32c::crc32c(msg),
            "frame {}: CRC32C mismatch",
            out.len()
        );
        out.push(msg);
        rest = &rest[4 + len..];
    }
    out
}

/// Decodes an unsigned LEB128 varint: the value and the bytes it took.
pub fn uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Label pairs as raw bytes, in the order they go on the wire.
pub type RawLabels<'a> = Vec<(&'a [u8], &'a [u8])>;

/// A `WriteRequest` encoded by hand (field numbers from `prompb/types.proto`), for what prost
/// cannot express: every sample's value field is written, -0.0 included, and label bytes
/// need not be UTF-8.
pub fn encode_write_request_by_hand(series: &[(RawLabels<'_>, Samples)]) -> Vec<u8> {
    fn len_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
        out.push(field << 3 | 2);
        put_uvarint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut req = Vec::new();
    for (labels, samples) in series {
        let mut ts = Vec::new();
        for (n, v) in labels {
            let mut l = Vec::new();
            len_field(&mut l, 1, n);
            len_field(&mut l, 2, v);
            len_field(&mut ts, 1, &l);
        }
        for &(t, bits) in samples {
            let mut s = vec![1 << 3 | 1];
            s.extend_from_slice(&bits.to_le_bytes());
            s.push(2 << 3);
            put_uvarint(&mut s, t as u64);
            len_field(&mut ts, 2, &s);
        }
        len_field(&mut req, 1, &ts);
    }
    req
}

fn check_labels_sorted(labels: &Labels) {
    assert!(
        labels.windows(2).all(|w| w[0].0 < w[1].0),
        "labels not sorted by name (or repeated): {}",
        fmt_labels(labels)
    );
}

fn check_samples(labels: &Labels, samples: &Samples) {
    assert!(
        samples.windows(2).all(|w| w[0].0 < w[1].0),
        "{}: timestamps not strictly increasing",
        fmt_labels(labels)
    );
}

pub fn to_labels(ls: &[Label]) -> Labels {
    ls.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

pub fn to_proto_labels(ls: &Labels) -> Vec<Label> {
    ls.iter()
        .map(|(n, v)| Label {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Labels from literal pairs, sorted by name.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

pub fn series_proto(labels: &Labels, samples: &[(i64, u64)]) -> weft::proto::prompb::TimeSeries {
    weft::proto::prompb::TimeSeries {
        labels: to_proto_labels(labels),
        samples: samples
            .iter()
            .map(|&(t, bits)| weft::proto::prompb::Sample {
                value: f64::from_bits(bits),
                timestamp: t,
            })
            .collect(),
        exemplars: vec![],
        histograms: Vec::new(),
    }
}

pub fn matcher(ty: MatcherType, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: ty as i32,
        name: name.to_string(),
        value: value.to_string(),
    }
}

pub fn query(start_ms: i64, end_ms: i64, matchers: Vec<LabelMatcher>) -> Query {
    Query {
        start_timestamp_ms: start_ms,
        end_timestamp_ms: end_ms,
        matchers,
        hints: None,
    }
}

pub fn fmt_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// A PromQL string literal for `s`.
pub fn promql_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A PromQL selector `{a="b", c!~"d"}` for the matchers.
pub fn selector(matchers: &[LabelMatcher]) -> String {
    let parts: Vec<String> = matchers
        .iter()
        .map(|m| {
            let op = match MatcherType::try_from(m.r#type).expect("known matcher type") {
                MatcherType::Eq => "=",
                MatcherType::Neq => "!=",
                MatcherType::Re => "=~",
                MatcherType::Nre => "!~",
            };
            format!("{}{op}{}", m.name, promql_quote(&m.value))
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Parses one metric's value out of Prometheus/OpenMetrics text: the sum over all samples
/// named exactly `name` whose labels include every pair of `want`. None if there is none.
pub fn metric_value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((n, labels, rest)) = parse_sample_line(line) else {
            continue;
        };
        if n != name {
            continue;
        }
        if !want
            .iter()
            .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        {
            continue;
        }
        let value: f64 = match rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => continue,
        };
        total = Some(total.unwrap_or(0.0) + value);
    }
    total
}

/// `name{l="v",...} value [ts]` → (name, labels, "value [ts]").
fn parse_sample_line(line: &str) -> Option<(&str, Labels, &str)> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices();
        let mut lname = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &r[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    // A quoted value follows.
                    let (_, q) = chars.next()?;
                    if q != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut lname), value));
                }
                c => lname.push(c),
            }
        }
    }
    Some((name, labels, rest.trim()))
}

/// Self-checks of the harness's parsers, run by each test binary that includes this module.
pub fn self_check() {
    assert_eq!(
        parse_listen_port("INFO weft: listening on http://127.0.0.1:43121"),
        Some(43121)
    );
    assert_eq!(
        parse_listen_port("listening on http://[::1]:9009/ now"),
        Some(9009)
    );
    assert_eq!(parse_listen_port("starting"), None);
    let text = "# HELP x\nweft_x_total{reason=\"a\",k=\"q\\\"}\"} 3\nweft_x_total{reason=\"b\"} 4.5\nweft_y 7\n";
    assert_eq!(metric_value(text, "weft_x_total", &[]), Some(7.5));
    assert_eq!(
        metric_value(text, "weft_x_total", &[("k", "q\"}")]),
        Some(3.0)
    );
    assert_eq!(metric_value(text, "weft_y", &[]), Some(7.0));
    assert_eq!(metric_value(text, "weft_z", &[]), None);
    let mut v = Vec::new();
    put_uvarint(&mut v, 4 << 30);
    assert_eq!(uvarint(&v), Some((4 << 30, v.len())));
    assert_eq!(strip_ansi("\u{1b}[32mINFO\u{1b}[0m ok"), "INFO ok");
}

// ---- starting with an environment; store-era requests ----

/// The header remote read answers with when some store data could not be read.
pub const PARTIAL_HEADER: &str = "x-weft-partial";

impl Weft {
    /// Starts `weft serve` like [`Weft::start`] (`data_dir` None: a fresh temporary directory,
    /// removed with the server) or [`Weft::start_on`] (`data_dir` given: kept), with `env`
    /// added to its environment, e.g. the `AWS_*` settings of an S3 store (see
    /// [`s3::s3_env`]). Waits until `/ready` answers 200.
    pub fn start_with_env(
        data_dir: Option<&Path>,
        args: &[&str],
        env: &[(String, String)],
        log_file: Option<PathBuf>,
    ) -> Weft {
        let data_dir = match data_dir {
            Some(p) => DataDir::Kept(p.to_path_buf()),
            None => DataDir::Owned(TempDir::new("weft-it")),
        };
        Weft::spawn(data_dir, args, env, log_file)
    }

    /// POST with an empty body; an `Err` when no answer came (e.g. the server exited first).
    pub fn try_post(&self, path_and_query: &str) -> Result<Resp, String> {
        let r = self
            .client
            .post(self.url(path_and_query))
            .send()
            .map_err(|e| format!("POST {path_and_query}: {e:#}"))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r
            .bytes()
            .map_err(|e| format!("POST {path_and_query}: reading the body: {e:#}"))?
            .to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// `POST /ingester/flush?wait=true&timeout=…`: everything, open chunks too, into the store.
    pub fn flush_wait(&self, timeout: &str) -> Resp {
        let path = format!("/ingester/flush?wait=true&timeout={timeout}");
        self.try_post(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Remote read in SAMPLES mode like [`Weft::read_samples`], also returning the response
    /// (for its headers; [`PARTIAL_HEADER`] in particular).
    pub fn read_samples_resp(
        &self,
        tenant: Option<&str>,
        queries: &[Query],
    ) -> (Vec<SeriesSet>, Resp) {
        let req = ReadRequest {
            queries: queries.to_vec(),
            accepted_response_types: vec![ResponseType::Samples as i32],
        };
        let r = self.read_raw(tenant, &req);
        (decode_samples(&r, queries), r)
    }

    /// Remote read in STREAMED_XOR_CHUNKS mode like [`Weft::read_chunks`], also returning the
    /// response.
    pub fn read_chunks_resp(
        &self,
        tenant: Option<&str>,
        queries: &[Query],
    ) -> (Vec<SeriesSet>, Resp) {
        let req = ReadRequest {
            queries: queries.to_vec(),
            accepted_response_types: vec![
                ResponseType::StreamedXorChunks as i32,
                ResponseType::Samples as i32,
            ],
        };
        let r = self.read_raw(tenant, &req);
        (decode_chunks(&r, queries).0, r)
    }
}

/// The `warnings` of a Prometheus-API JSON answer (empty when there are none).
pub fn api_warnings(v: &serde_json::Value) -> Vec<String> {
    v.get("warnings")
        .and_then(|w| w.as_array())
        .map(|a| {
            a.iter()
                .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a SAMPLES remote-read answer with the checks of [`Weft::read_samples`]: status
/// 200, content type, one result per query, series strictly sorted, labels sorted, samples
/// increasing and inside each query's range.
pub fn decode_samples(r: &Resp, queries: &[Query]) -> Vec<SeriesSet> {
    assert_eq!(r.status, 200, "remote read (samples) failed: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/x-protobuf"),
        "SAMPLES response has Content-Type {ct:?}"
    );
    let raw = unsnappy(&r.body).unwrap_or_else(|e| panic!("SAMPLES response is not snappy: {e}"));
    let resp = ReadResponse::decode(raw.as_slice())
        .unwrap_or_else(|e| panic!("SAMPLES response is not a ReadResponse: {e}"));
    assert_eq!(
        resp.results.len(),
        queries.len(),
        "one QueryResult per query"
    );
    let mut out = Vec::with_capacity(queries.len());
    for (qi, (result, q)) in resp.results.into_iter().zip(queries).enumerate() {
        let mut set: SeriesSet = Vec::with_capacity(result.timeseries.len());
        for ts in result.timeseries {
            let labels = to_labels(&ts.labels);
            check_labels_sorted(&labels);
            if let Some((prev, _)) = set.last() {
                assert!(
                    prev < &labels,
                    "query {qi}: series not strictly sorted: {} then {}",
                    fmt_labels(prev),
                    fmt_labels(&labels)
                );
            }
            let samples: Samples = ts
                .samples
                .iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect();
            check_samples(&labels, &samples);
            if let Some(&(t, _)) = samples
                .iter()
                .find(|(t, _)| *t < q.start_timestamp_ms || *t > q.end_timestamp_ms)
            {
                panic!(
                    "query {qi}: {} has a sample at {t}, outside [{}, {}]",
                    fmt_labels(&labels),
                    q.start_timestamp_ms,
                    q.end_timestamp_ms
                );
            }
            set.push((labels, samples));
        }
        out.push(set);
    }
    out
}

/// Decodes a STREAMED_XOR_CHUNKS answer with the checks of [`Weft::read_chunks`] (frame CRC
/// and size, query order, series order, chunk headers), merging series split across frames
/// and keeping the samples within each query's range. Also returns the number of frames.
pub fn decode_chunks(r: &Resp, queries: &[Query]) -> (Vec<SeriesSet>, usize) {
    assert_eq!(r.status, 200, "remote read (chunks) failed: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/x-streamed-protobuf")
            && ct.contains("proto=prometheus.ChunkedReadResponse"),
        "STREAMED_XOR_CHUNKS response has Content-Type {ct:?}"
    );
    let mut out: Vec<Vec<(Labels, Vec<ChunkInfo>)>> = vec![Vec::new(); queries.len()];
    let mut last_query: i64 = -1;
    let frames = read_frames(&r.body);
    let frame_count = frames.len();
    for msg in frames {
        let frame = ChunkedReadResponse::decode(msg)
            .unwrap_or_else(|e| panic!("frame is not a ChunkedReadResponse: {e}"));
        let qi = frame.query_index;
        assert!(
            qi >= 0 && (qi as usize) < queries.len(),
            "frame for query_index {qi}, but only {} queries were sent",
            queries.len()
        );
        assert!(
            qi >= last_query,
            "frames go back from query {last_query} to {qi}"
        );
        last_query = qi;
        let set = &mut out[qi as usize];
        for cs in frame.chunked_series {
            let labels = to_labels(&cs.labels);
            check_labels_sorted(&labels);
            let chunks: Vec<ChunkInfo> = cs
                .chunks
                .iter()
                .map(|c| {
                    assert_eq!(
                        c.r#type,
                        ChunkEncoding::Xor as i32,
                        "{}: chunk of encoding {}",
                        fmt_labels(&labels),
                        c.r#type
                    );
                    let samples = weft::chunk::decode_bits(&c.data).unwrap_or_else(|e| {
                        panic!("{}: chunk does not decode: {e}", fmt_labels(&labels))
                    });
                    assert!(!samples.is_empty(), "{}: empty chunk", fmt_labels(&labels));
                    assert_eq!(
                        (c.min_time_ms, c.max_time_ms),
                        (samples[0].0, samples[samples.len() - 1].0),
                        "{}: chunk min/max time disagree with its samples",
                        fmt_labels(&labels)
                    );
                    ChunkInfo { samples }
                })
                .collect();
            match set.last_mut() {
                Some((prev, prev_chunks)) if *prev == labels => prev_chunks.extend(chunks),
                Some((prev, _)) if *prev > labels => panic!(
                    "query {qi}: series not sorted: {} then {}",
                    fmt_labels(prev),
                    fmt_labels(&labels)
                ),
                _ => set.push((labels, chunks)),
            }
        }
    }
    let sets = out
        .into_iter()
        .zip(queries)
        .map(|(set, q)| {
            set.into_iter()
                .map(|(labels, chunks)| {
                    let all: Samples = chunks.into_iter().flat_map(|c| c.samples).collect();
                    check_samples(&labels, &all);
                    let kept = all
                        .into_iter()
                        .filter(|(t, _)| *t >= q.start_timestamp_ms && *t <= q.end_timestamp_ms)
                        .collect();
                    (labels, kept)
                })
                .collect()
        })
        .collect();
    (sets, frame_count)
}

/// A mounted tmpfs (for disk-full tests; needs root), unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at a fresh temp directory named after `prefix`; `None` if
    /// it cannot be mounted (not root).
    pub fn mount(prefix: &str, bytes: u64) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
