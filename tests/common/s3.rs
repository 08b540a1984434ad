//! A real S3 for the integration tests: a moto server process, a fault-injecting TCP proxy to
//! put in front of it, and a direct client to look into the bucket.
//!
//! - [`Moto`] runs `moto_server` (`pip install 'moto[server]'`) on a free loopback port, in its
//!   own process group so that [`Moto::pause`] (SIGSTOP) and [`Moto::resume`] (SIGCONT) reach
//!   it whatever wrapper started it, and kills it on drop. Missing moto is a skip, or a
//!   failure under `CI=true` (see [`super::require`]).
//! - [`FaultProxy`] forwards a loopback port to moto and can be switched at runtime to hang
//!   (read everything, answer nothing) or to refuse (listening socket closed, open
//!   connections reset), and back to forwarding on the same port.
//! - [`Bucket`] lists and fetches objects with object_store's own S3 client, pointed at moto
//!   directly (never through the proxy), so that a test can check what really reached the
//!   store independently of weft's code.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

/// How long moto may take to answer its first request (a cold Python start takes a few s).
const MOTO_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The `AWS_*` settings weft (and [`Bucket`]) need for moto. Moto accepts any credentials.
pub const S3_REGION: &str = "us-east-1";

/// A moto S3 server process; killed (with its process group) on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    /// Set while SIGSTOPped, so that drop can tell what it killed.
    paused: AtomicBool,
}

static SHARED_MOTO: Mutex<Weak<Moto>> = Mutex::new(Weak::new());

impl Moto {
    /// Whether `moto_server` can be run at all. `--help` imports moto, which takes about a
    /// second.
    pub fn available() -> bool {
        Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts a moto server of the caller's own (one a drill may pause without disturbing
    /// other tests) and creates `buckets` in it. `None` means skip: moto is missing and this
    /// is not CI.
    pub fn start(buckets: &[&str]) -> Option<Moto> {
        if !super::require(
            "moto_server",
            Moto::available(),
            "pip install 'moto[server]'",
        ) {
            return None;
        }
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            // Moto logs one line per request; nobody reads them, and a full pipe would block it.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: SIGSTOP/SIGCONT/SIGKILL go to the group, so they reach
            // the Python process even if a wrapper script forked it rather than exec'ing it.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
        let moto = Moto {
            child,
            port,
            paused: AtomicBool::new(false),
        };
        let deadline = Instant::now() + MOTO_STARTUP_TIMEOUT;
        for bucket in buckets {
            moto.create_bucket(bucket, deadline);
        }
        Some(moto)
    }

    /// One moto server shared by every caller in this test binary that holds the `Arc` at
    /// the same time (the conformance suite's cases), with `bucket` created. Never pause a
    /// shared server.
    pub fn shared(bucket: &str) -> Option<Arc<Moto>> {
        let mut slot = SHARED_MOTO.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = slot.upgrade() {
            return Some(m);
        }
        let moto = Arc::new(Moto::start(&[bucket])?);
        *slot = Arc::downgrade(&moto);
        Some(moto)
    }

    /// Creates a bucket with a plain, unsigned HTTP `PUT /bucket` (moto does not check
    /// signatures), retrying until moto answers or `deadline` passes.
    pub fn create_bucket(&self, bucket: &str, deadline: Instant) {
        loop {
            match http_request(self.port, "PUT", &format!("/{bucket}")) {
                Ok(200) => return,
                Ok(status) => panic!("moto answered {status} to PUT /{bucket}"),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("moto_server did not come up on port {}: {e}", self.port),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`, moto itself.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: moto stops answering, but the kernel still accepts connections into its
    /// listen backlog and buffers requests. That is a hung server, for real.
    pub fn pause(&self) {
        super::signal_group(&self.child, libc::SIGSTOP);
        self.paused.store(true, Ordering::SeqCst);
    }

    /// SIGCONT: moto answers again, starting with everything queued while it was stopped.
    pub fn resume(&self) {
        super::signal_group(&self.child, libc::SIGCONT);
        self.paused.store(false, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; no SIGCONT needed.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: as in `super::signal_group`; the child has not been reaped yet.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A bodiless request over HTTP/1.1; returns the status code.
pub fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(resp))
}

/// A free loopback port, from the OS.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The environment weft needs to reach an S3 endpoint (moto, or a proxy in front of it):
/// object_store's `AmazonS3Builder::from_env` reads these. Path-style requests (the default)
/// are what moto serves without DNS tricks.
pub fn s3_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", S3_REGION),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

// ---- the bucket, seen directly ----

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A bucket in moto, read with object_store's own S3 client (not weft's `Store`), straight
/// at moto's port.
#[derive(Debug)]
pub struct Bucket {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    /// The bucket in `moto`, straight at moto's port.
    pub fn new(moto: &Moto, bucket: &str) -> Bucket {
        Bucket::at(&moto.endpoint(), bucket, Duration::from_secs(30))
    }

    /// The bucket through any endpoint (a [`FaultProxy`], say), each request bounded by
    /// `timeout` and retried at most once: a test that talks to a broken store should see
    /// the failure, not sit in object_store's default retries for minutes.
    pub fn at(endpoint: &str, bucket: &str, timeout: Duration) -> Bucket {
        // `allow_http` lives in the ClientOptions: set it there, because
        // `with_client_options` replaces whatever `AmazonS3Builder::with_allow_http` set (and
        // reqwest then refuses the http:// URL with a bare "builder error").
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region(S3_REGION)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_connect_timeout(timeout)
                    .with_timeout(timeout),
            )
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: timeout * 2,
                ..RetryConfig::default()
            })
            .build()
            .expect("S3 client for moto");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        Bucket { store, runtime }
    }

    /// Writes one object.
    pub fn put(&self, key: &str, bytes: bytes::Bytes) -> Result<(), String> {
        let path = ObjectPath::from(key);
        self.runtime
            .block_on(self.store.put(&path, bytes.into()))
            .map(drop)
            .map_err(|e| format!("PUT {key}: {e}"))
    }

    /// Every object under `prefix` (a path prefix: whole segments, as S3 lists with a `/`),
    /// sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<ObjectInfo> {
        let prefix = ObjectPath::from(prefix);
        let mut out: Vec<ObjectInfo> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("listing {prefix} in moto: {e}"))
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Number of objects and their total size under `prefix`.
    pub fn totals(&self, prefix: &str) -> (usize, u64) {
        let objects = self.list(prefix);
        (objects.len(), objects.iter().map(|o| o.size).sum())
    }

    /// One whole object.
    pub fn get(&self, key: &str) -> bytes::Bytes {
        let path = ObjectPath::from(key);
        self.runtime
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .unwrap_or_else(|e| panic!("GET {key} from moto: {e}"))
    }
}

// ---- the fault proxy ----

/// What the [`FaultProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProxyMode {
    /// Pass bytes both ways.
    Forward = 0,
    /// Accept and read, never forward or answer. Connections open when this mode is set stop
    /// forwarding too, and stay dead after a return to `Forward` (their HTTP stream is
    /// broken): the client has to give up on them, as with a hung server.
    Hang = 1,
    /// The listening socket is closed (connects get ECONNREFUSED) and every open connection
    /// is reset (RST).
    Refuse = 2,
    /// Reads work, writes fail: requests are forwarded, except that a request starting
    /// with `PUT`, `POST` or `DELETE` is answered `503 SlowDown` (as S3 answers when it
    /// sheds writes) and its connection closed. GETs came back before PUTs on 28 Feb 2017.
    ReadOnly = 3,
}

impl ProxyMode {
    fn from_u8(v: u8) -> ProxyMode {
        match v {
            0 => ProxyMode::Forward,
            1 => ProxyMode::Hang,
            3 => ProxyMode::ReadOnly,
            _ => ProxyMode::Refuse,
        }
    }
}

/// How often idle proxy threads look at the mode. Bounds how late a mode change reaches a
/// connection that is waiting for bytes.
const PROXY_POLL: Duration = Duration::from_millis(20);
/// How long the proxy waits to connect to the upstream before dropping the client.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct ProxyShared {
    mode: AtomicU8,
    stop: AtomicBool,
    upstream: SocketAddr,
    /// `None` while refusing.
    listener: Mutex<Option<TcpListener>>,
}

impl ProxyShared {
    fn mode(&self) -> ProxyMode {
        ProxyMode::from_u8(self.mode.load(Ordering::SeqCst))
    }
}

/// A TCP proxy on its own loopback port in front of `upstream`, with a runtime switch
/// between [`ProxyMode`]s. Threads, not tasks: two per connection, plus one acceptor.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = bind_reusable_port();
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(ProxyShared {
            mode: AtomicU8::new(ProxyMode::Forward as u8),
            stop: AtomicBool::new(false),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            listener: Mutex::new(Some(listener)),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(&s))
            .expect("spawn proxy acceptor");
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Switches the mode. When it returns, a refusing proxy's port is closed and a
    /// forwarding one's is listening again (the same port number); open connections see the
    /// change within [`PROXY_POLL`].
    pub fn set_mode(&self, mode: ProxyMode) {
        let mut listener = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        match mode {
            ProxyMode::Refuse => *listener = None,
            ProxyMode::Forward | ProxyMode::Hang | ProxyMode::ReadOnly => {
                if listener.is_none() {
                    *listener = Some(rebind(self.port));
                }
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        // Connection threads see `stop` within PROXY_POLL and end on their own.
    }
}

/// Binds a loopback port below the kernel's ephemeral range, so that while the proxy is
/// refusing (its port closed), no outgoing connection of this machine can be given the same
/// port number and block the rebind. Falls back to any free port.
fn bind_reusable_port() -> TcpListener {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        // Spread by pid and clock so that parallel test binaries rarely try the same port.
        let mut x = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let span = u64::from(ephemeral_low - 10_000);
        for _ in 0..64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let port = 10_000 + ((x >> 33) % span) as u16;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return l;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").expect("bind a proxy port")
}

/// Listens on `port` again. std sets SO_REUSEADDR on Unix listeners, so connections of the
/// previous listener in TIME_WAIT do not block it.
fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                l.set_nonblocking(true).expect("nonblocking listener");
                return l;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("fault proxy: rebinding port {port}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("fault proxy: cannot listen on port {port} again: {e}"),
        }
    }
}

fn accept_loop(shared: &Arc<ProxyShared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = {
            let listener = shared.listener.lock().unwrap_or_else(|e| e.into_inner());
            match listener.as_ref() {
                Some(l) => l.accept(),
                None => Err(std::io::ErrorKind::WouldBlock.into()),
            }
        };
        match accepted {
            Ok((client, _)) => {
                let s = Arc::clone(shared);
                let _ = std::thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || serve_connection(client, &s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => {
                eprintln!("fault proxy: accept: {e}");
                std::thread::sleep(PROXY_POLL);
            }
        }
    }
}

/// State of one proxied connection, shared by its two pump threads.
#[derive(Debug, Default)]
struct Conn {
    /// Set once the connection saw `Hang`: it never forwards again.
    hung: AtomicBool,
    /// Set when either direction has ended for good.
    closed: AtomicBool,
    /// Set once the client has sent a request that has not been answered yet: the next
    /// bytes from the client are then a body, not a new request line.
    in_request: AtomicBool,
}

/// The answer to a write in [`ProxyMode::ReadOnly`].
const READ_ONLY_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/xml\r\nContent-Length: 91\r\nConnection: close\r\n\r\n\
<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>writes refused</Message></Error>\n";

/// Whether a client's bytes, at the start of a request, are a write.
fn is_write_request(b: &[u8]) -> bool {
    [&b"PUT "[..], b"POST ", b"DELETE "]
        .iter()
        .any(|m| b.starts_with(m))
}

fn serve_connection(client: TcpStream, shared: &Arc<ProxyShared>) {
    // Accepted sockets may inherit the listener's O_NONBLOCK on some platforms.
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let conn = Arc::new(Conn::default());
    let upstream = match shared.mode() {
        ProxyMode::Forward | ProxyMode::ReadOnly => {
            match TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT_TIMEOUT) {
                Ok(u) => Some(u),
                // The client sees its connection closed without an answer.
                Err(_) => return,
            }
        }
        ProxyMode::Hang => {
            conn.hung.store(true, Ordering::SeqCst);
            None
        }
        ProxyMode::Refuse => {
            reset(&client);
            return;
        }
    };
    let Some(upstream) = upstream else {
        // Hung from the start: read and discard until the client gives up or a reset.
        pump(&client, None, &client, shared, &conn);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (c_read, u_write) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    let s = Arc::clone(shared);
    let cn = Arc::clone(&conn);
    let c_reset = client.try_clone().ok();
    let up = std::thread::Builder::new()
        .name("fault-proxy-up".into())
        .spawn(move || {
            if let Some(c_reset) = c_reset {
                pump_up(&c_read, &u_write, &c_reset, &s, &cn);
            }
        });
    pump(&upstream, Some(&client), &client, shared, &conn);
    if let Ok(h) = up {
        let _ = h.join();
    }
}

/// [`pump`] from the client to the upstream, which can refuse writes.
fn pump_up(
    from: &TcpStream,
    to: &TcpStream,
    client: &TcpStream,
    shared: &ProxyShared,
    conn: &Conn,
) {
    pump_dir(from, Some(to), client, shared, conn, Some(to));
}

/// Copies `from` → `to` until EOF, an error, a reset or the proxy's end. While the
/// connection is hung, what is read is dropped. `client` is the client's socket, the one a
/// refusal resets.
fn pump(
    from: &TcpStream,
    to: Option<&TcpStream>,
    client: &TcpStream,
    shared: &ProxyShared,
    conn: &Conn,
) {
    pump_dir(from, to, client, shared, conn, None);
}

/// The pump; `up` is the upstream socket when this is the client-to-upstream direction.
fn pump_dir(
    from: &TcpStream,
    to: Option<&TcpStream>,
    client: &TcpStream,
    shared: &ProxyShared,
    conn: &Conn,
    up: Option<&TcpStream>,
) {
    let _ = from.set_read_timeout(Some(PROXY_POLL));
    let mut buf = vec![0u8; 64 << 10];
    let mut from = from;
    let mut was_reset = false;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match shared.mode() {
            ProxyMode::Refuse => {
                reset(client);
                was_reset = true;
                break;
            }
            ProxyMode::Hang => conn.hung.store(true, Ordering::SeqCst),
            ProxyMode::Forward | ProxyMode::ReadOnly => {}
        }
        if conn.hung.load(Ordering::SeqCst) && conn.closed.load(Ordering::SeqCst) {
            // The other direction is gone, and a hung connection never answers anyway.
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if conn.hung.load(Ordering::SeqCst) {
                    continue;
                }
                // Checked again right before forwarding, so that nothing read after the
                // switch to Hang or Refuse gets through.
                if !matches!(shared.mode(), ProxyMode::Forward | ProxyMode::ReadOnly) {
                    if shared.mode() == ProxyMode::Hang {
                        conn.hung.store(true, Ordering::SeqCst);
                    }
                    continue;
                }
                let Some(mut to) = to else { continue };
                if let Some(up) = up {
                    let starts = !conn.in_request.swap(true, Ordering::SeqCst);
                    if starts && shared.mode() == ProxyMode::ReadOnly && is_write_request(&buf[..n])
                    {
                        let mut c = client;
                        let _ = c.write_all(READ_ONLY_ANSWER);
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = up.shutdown(Shutdown::Both);
                        break;
                    }
                } else {
                    // The server answers: the client's next bytes start a new request.
                    conn.in_request.store(false, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    conn.closed.store(true, Ordering::SeqCst);
    // Half-close: the peer sees EOF where this direction ended. Not after a reset: a FIN
    // would reach the client before the RST, and it would read a clean end of stream.
    if let (Some(to), false) = (to, was_reset) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// Makes the kernel answer the client with RST when our last handle on the socket closes
/// (SO_LINGER with a zero timeout), and wakes the other pump thread with a shutdown.
fn reset(client: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid, live `linger`; the
    // descriptor belongs to `client`, which is open for the duration of the call.
    unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Checks of the proxy against a local echo server: forward, refuse (new connects refused,
/// open connections reset), hang (a client read times out), forward again on the same port.
/// Called from a test; takes about a second.
pub fn fault_proxy_self_check() {
    let echo = TcpListener::bind("127.0.0.1:0").expect("echo listener");
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in echo.incoming() {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = FaultProxy::start(echo_port);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", proxy.port()))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok::<_, std::io::Error>(s)
    };
    let echo_once = |s: &mut TcpStream, msg: &[u8]| -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    };

    // Forward.
    let mut open = connect().expect("connect through the proxy");
    assert_eq!(echo_once(&mut open, b"ping").expect("echo"), b"ping");

    // Refuse: a new connect is refused, the open connection is reset.
    proxy.set_mode(ProxyMode::Refuse);
    let refused = TcpStream::connect(("127.0.0.1", proxy.port()));
    assert_eq!(
        refused.as_ref().err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "connect while refusing: {refused:?}"
    );
    std::thread::sleep(PROXY_POLL * 5);
    let broken = echo_once(&mut open, b"after-refuse");
    assert!(
        matches!(
            broken.as_ref().map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset) | Err(std::io::ErrorKind::BrokenPipe)
        ),
        "an open connection should be reset while refusing, got {broken:?}"
    );

    // Hang: connects succeed, nothing comes back, the client's read times out.
    proxy.set_mode(ProxyMode::Hang);
    let mut hung = connect().expect("connect while hanging");
    let start = Instant::now();
    let r = echo_once(&mut hung, b"anyone?");
    assert!(
        matches!(
            r.as_ref().map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock) | Err(std::io::ErrorKind::TimedOut)
        ),
        "a read through a hung proxy should time out, got {r:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(400));

    // Forward again, same port: new connections work; the hung one stays dead.
    proxy.set_mode(ProxyMode::Forward);
    let mut again = connect().expect("connect after the return to Forward");
    assert_eq!(echo_once(&mut again, b"pong").expect("echo again"), b"pong");
    let mut buf = [0u8; 16];
    let r = hung.read(&mut buf);
    assert!(
        !matches!(r, Ok(n) if n > 0),
        "a connection hung earlier must not come back to life: {r:?}"
    );
    // Hang also stops an open forwarding connection.
    proxy.set_mode(ProxyMode::Hang);
    std::thread::sleep(PROXY_POLL * 3);
    let r = echo_once(&mut again, b"stuck");
    assert!(r.is_err(), "open connection kept forwarding in Hang: {r:?}");

    // Read-only: a GET goes through, a PUT is answered 503 and its connection closed.
    proxy.set_mode(ProxyMode::ReadOnly);
    let mut reader = connect().expect("connect while read-only");
    assert_eq!(
        echo_once(&mut reader, b"GET /x HTTP/1.1\r\n\r\n")
            .expect("a GET through a read-only proxy"),
        b"GET /x HTTP/1.1\r\n\r\n"
    );
    let mut writer = connect().expect("connect while read-only");
    let answer = echo_once(&mut writer, b"PUT /x HTTP/1.1\r\n\r\n").expect("an answer to a PUT");
    assert!(
        answer.starts_with(b"HTTP/1.1 503"),
        "a PUT through a read-only proxy: {:?}",
        String::from_utf8_lossy(&answer)
    );
    proxy.set_mode(ProxyMode::Forward);
}
