//! The HTTP server loop: weft's own accept loop over hyper's HTTP/1 connections, serving the
//! [`super::router`].
//!
//! `axum::serve` keeps every connection for as long as the client wants and accepts as many
//! as the fd limit allows: idle and half-sent connections piled up until `accept` failed and
//! `/ready` stalled. Here every connection is in one of three phases, and the phase bounds
//! how long it may stay:
//!
//! - **idle** (no request in progress, no byte of the next one yet): closed after
//!   `--server.http-idle-timeout`;
//! - **headers** (bytes of a request head arrived, the head is not complete): closed after
//!   `--server.http-read-header-timeout`, counted from its first byte (slowloris);
//! - **busy** (a request is being served): the handler bounds it; reading a body has its own
//!   deadline (`--server.http-body-read-timeout` plus the body's size at
//!   `--server.http-body-min-rate`, see `read_body` in `api/mod.rs`).
//!
//! At most `--server.max-connections` connections are open. At the cap, a new connection
//! evicts the connection that has been idle (or half-sent its head) the longest, so an
//! operator's `/ready` or `/metrics` gets through however many idle sockets a client holds;
//! if every connection is busy, the new one waits up to [`ACCEPT_WAIT`] for a slot and is
//! then closed. Busy connections are never evicted. So that every connection cannot be busy,
//! at most the cap less [`reserved_for_operators`] requests are served at once: one more
//! gets 503 + Retry-After at once, unless it is `GET /ready` or `GET /metrics`. However many
//! slow bodies are on their way in, some connections are therefore idle, and the operator's
//! new connection evicts one of them.
//!
//! hyper's own `header_read_timeout` is not used: it starts whenever hyper waits for a request
//! head, so it would also close idle keep-alive connections at the (short) header deadline.
//!
//! **Invariant:** weft closes a connection on its own only while no request on it is being
//! served (idle or headers phase); a busy connection is only ever shut down gracefully (its
//! request finishes, then it closes), except when shutdown outlasts [`SHUTDOWN_GRACE`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::{ReasonLabels, ServerMetrics};

/// How long a new connection waits for a slot when the cap is reached and no connection can
/// be evicted (all are busy); then it is closed. The accept loop waits with it, so further
/// connections queue in the kernel's backlog meanwhile.
pub const ACCEPT_WAIT: Duration = Duration::from_secs(1);
/// How long closing an idle connection waits for hyper to flush its last response.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long shutdown waits for busy connections to finish their requests before it closes
/// them anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Connections kept for `/ready` and `/metrics`: requests to anything else are refused once
/// `max_connections` less this many are in progress (a 32nd of the cap, at least 4).
pub fn reserved_for_operators(max_connections: usize) -> usize {
    (max_connections / 32)
        .max(4)
        .min(max_connections.saturating_sub(1))
}

/// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`): deep
/// enough that a burst of connections does not drop the operator's SYN while the accept loop
/// catches up.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (`host:port`) with [`LISTEN_BACKLOG`]: the first of its addresses that binds,
/// as `TcpListener::bind` does.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for sa in tokio::net::lookup_host(addr).await? {
        match bind_one(sa) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

fn bind_one(sa: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if sa.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's own bind do on Unix: a restart can bind while old connections of
    // the previous process linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(sa)?;
    socket.listen(LISTEN_BACKLOG)
}

/// File descriptors kept out of the connection cap, for the WAL, spill and local-tier files,
/// the store's connections and the process itself.
pub const FD_RESERVE: u64 = 256;

/// The server's bounds, from the `--server.*` flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most open client connections.
    pub max_connections: usize,
    /// Longest time from the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// Longest time a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Longest time a response may wait for the client to take any of its bytes (a
    /// client that stops reading is cut then, as nginx's `send_timeout`).
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Raises the soft fd limit to the hard one (as Go's runtime does) and returns the connection
/// cap that fits in it with [`FD_RESERVE`] to spare, logging what it did. Without a readable
/// limit, `max_connections` is kept.
pub fn fit_fd_limit(max_connections: usize) -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we pass and nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            tracing::warn!(
                "reading the fd limit (getrlimit): {}; keeping --server.max-connections={max_connections}",
                std::io::Error::last_os_error()
            );
            return max_connections;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the
            // hard one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                tracing::info!(
                    from = lim.rlim_cur,
                    to = lim.rlim_max,
                    "raised the soft fd limit to the hard limit"
                );
                lim.rlim_cur = lim.rlim_max;
            }
        }
        // rlim_t is u64 on Linux but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        let fit = cap_for_fd_limit(max_connections, lim.rlim_cur as u64);
        if fit < max_connections {
            tracing::warn!(
                fd_limit = lim.rlim_cur,
                reserve = FD_RESERVE,
                requested = max_connections,
                max_connections = fit,
                "--server.max-connections lowered to fit the fd limit"
            );
        } else {
            tracing::info!(fd_limit = lim.rlim_cur, max_connections, "connection cap");
        }
        fit
    }
    #[cfg(not(unix))]
    max_connections
}

/// The connection cap that leaves [`FD_RESERVE`] of `fd_limit` free (at least 16).
pub fn cap_for_fd_limit(max_connections: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(FD_RESERVE).max(16);
    max_connections.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// What a connection is doing, for its deadlines and for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress and no byte of the next one.
    Idle,
    /// Part of a request head has arrived.
    Headers,
    /// A request is being served.
    Busy,
}

#[derive(Debug)]
struct PhaseState {
    phase: Phase,
    since: Instant,
    /// Requests in progress (HTTP/1 serves one at a time; counted all the same).
    busy: u32,
    /// Since when a write to the client has been waiting for room (the client is not
    /// reading); `None` while writes go through.
    write_blocked_since: Option<Instant>,
}

/// One open connection, shared by its task, its I/O wrapper, its service and the registry.
#[derive(Debug)]
struct Conn {
    state: parking_lot::Mutex<PhaseState>,
    /// Set when the accept loop picked this connection to make room.
    evicted: AtomicBool,
    /// Set when shutdown ran out of patience: close even if busy.
    killed: AtomicBool,
    wake: Notify,
}

impl Conn {
    fn new(now: Instant) -> Self {
        Self {
            state: parking_lot::Mutex::new(PhaseState {
                phase: Phase::Idle,
                since: now,
                busy: 0,
                write_blocked_since: None,
            }),
            evicted: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Bytes arrived: an idle connection starts its header deadline.
    fn on_read(&self) {
        let mut s = self.state.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Headers;
            s.since = Instant::now();
        }
    }

    fn begin_request(&self) {
        let mut s = self.state.lock();
        s.busy += 1;
        s.phase = Phase::Busy;
        s.since = Instant::now();
    }

    fn end_request(&self) {
        let mut s = self.state.lock();
        s.busy = s.busy.saturating_sub(1);
        if s.busy == 0 {
            s.phase = Phase::Idle;
            s.since = Instant::now();
        }
    }

    /// A write to the client could not go through (its socket buffer is full).
    fn write_blocked(&self) {
        let mut s = self.state.lock();
        if s.write_blocked_since.is_none() {
            s.write_blocked_since = Some(Instant::now());
        }
    }

    /// A write to the client went through (or failed: the connection ends anyway).
    fn write_done(&self) {
        self.state.lock().write_blocked_since = None;
    }

    /// When the write the client has not taken was first refused room, if any.
    fn write_blocked_since(&self) -> Option<Instant> {
        self.state.lock().write_blocked_since
    }

    fn phase(&self) -> (Phase, Instant) {
        let s = self.state.lock();
        (s.phase, s.since)
    }
}

/// When a connection in `phase` since `since` is due to close, and why; `None` while busy.
fn deadline(cfg: &ServerConfig, phase: Phase, since: Instant) -> Option<(Instant, &'static str)> {
    // A timeout too long to add to an instant is no timeout.
    match phase {
        Phase::Idle => Some((since.checked_add(cfg.idle_timeout)?, "idle_timeout")),
        Phase::Headers => Some((
            since.checked_add(cfg.header_read_timeout)?,
            "header_timeout",
        )),
        Phase::Busy => None,
    }
}

/// The open connections, for eviction and shutdown.
#[derive(Debug, Default)]
struct Registry {
    conns: parking_lot::Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn add(&self, conn: Arc<Conn>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().insert(id, conn);
        id
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
    }

    /// Asks the connection that has been idle or half-sent the longest to close; false if
    /// every connection is busy (or already on its way out).
    fn evict_oldest_unbusy(&self) -> bool {
        let conns = self.conns.lock();
        let victim = conns
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed))
            .filter_map(|c| {
                let (phase, since) = c.phase();
                (phase != Phase::Busy).then_some((since, c))
            })
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, c)) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }

    fn kill_all(&self) {
        for c in self.conns.lock().values() {
            c.killed.store(true, Ordering::Relaxed);
            c.wake.notify_one();
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, lets busy
/// connections finish their requests (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ServerConfig,
    metrics: ServerMetrics,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    let max = cfg.max_connections.max(1);
    metrics.connections_max.set(max as i64);
    let slots = Arc::new(Semaphore::new(max));
    let requests = Arc::new(RequestCap {
        in_progress: AtomicUsize::new(0),
        max: max - reserved_for_operators(max),
        refused: metrics.requests_refused.clone(),
    });
    let registry = Arc::new(Registry::default());
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let sock = match accepted {
            Ok((sock, _peer)) => sock,
            Err(e) => {
                // EMFILE/ENFILE and aborted handshakes end up here; a short pause keeps the loop
                // from spinning while the fds are gone. Logged once a second at most.
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!("accepting a connection: {e}");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if registry.evict_oldest_unbusy() {
                    metrics
                        .connections_closed
                        .get_or_create(&ReasonLabels { reason: "evicted" })
                        .inc();
                }
                match tokio::time::timeout(ACCEPT_WAIT, slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        metrics.connections_refused.inc();
                        drop(sock);
                        continue;
                    }
                }
            }
        };
        // Small answers (204s, /ready) must not wait for Nagle.
        let _ = sock.set_nodelay(true);
        let conn = Arc::new(Conn::new(Instant::now()));
        let id = registry.add(conn.clone());
        metrics.connections.inc();
        tokio::spawn(run_connection(
            sock,
            conn,
            ConnDone {
                id,
                registry: registry.clone(),
                metrics: metrics.clone(),
                _permit: permit,
            },
            router.clone(),
            requests.clone(),
            cfg.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    // Every connection has seen `stop`: idle ones are closing, busy ones finish their request.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = max - slots.available_permits();
        tracing::warn!(
            open,
            "connections still busy {SHUTDOWN_GRACE:?} after shutdown began; closing them"
        );
        registry.kill_all();
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
    Ok(())
}

/// Releases a connection's slot and registry entry when its task ends, however it ends.
struct ConnDone {
    id: u64,
    registry: Arc<Registry>,
    metrics: ServerMetrics,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnDone {
    fn drop(&mut self) {
        self.registry.remove(self.id);
        self.metrics.connections.dec();
    }
}

async fn run_connection(
    sock: TcpStream,
    conn: Arc<Conn>,
    done: ConnDone,
    router: Router,
    requests: Arc<RequestCap>,
    cfg: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(TrackedIo {
        inner: sock,
        conn: conn.clone(),
    });
    let service = ConnService {
        router,
        conn: conn.clone(),
        requests,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Set explicitly: keep-alive on (Prometheus reuses its connections); no hyper header
    // timer (see the module docs: the phases below bound idle and header time); a request
    // head of at most 100 headers within a read buffer of at most 400 KiB (hyper's defaults:
    // a larger head is a 431, and the buffer is also what each body read fills).
    builder
        .keep_alive(true)
        .header_read_timeout(None)
        .half_close(false)
        .max_headers(100)
        .max_buf_size(400 << 10);
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    // How often the phase is looked at again while nothing else wakes the task: a phase
    // changes inside hyper's polls (bytes read, response done), which do not wake this loop.
    let tick = (cfg.header_read_timeout.min(cfg.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut graceful = false;
    // Why weft closes the connection (None: the client did, or it was evicted, which the
    // accept loop counts), and whether it was idle.
    let (close_reason, idle) = loop {
        let (phase, since) = conn.phase();
        let now = Instant::now();
        let due = deadline(&cfg, phase, since);
        if let Some((at, reason)) = due {
            if at <= now && !graceful {
                break (Some(reason), phase == Phase::Idle);
            }
        }
        // A client that takes none of a response's bytes for --server.http-write-timeout is
        // cut, busy or not (also during a graceful end: it would hold the shutdown).
        if let Some(at) = conn
            .write_blocked_since()
            .and_then(|b| b.checked_add(cfg.write_timeout))
        {
            if at <= now {
                break (Some("write_timeout"), false);
            }
        }
        let wake_at = due.map_or(now + tick, |(at, _)| at.min(now + tick));
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("HTTP connection ended with an error: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(wake_at.into()) => {}
            () = conn.wake.notified() => {
                if conn.killed.load(Ordering::Relaxed) {
                    break (Some("shutdown"), false);
                }
                if conn.evicted.load(Ordering::Relaxed) && !graceful {
                    let phase = conn.phase().0;
                    if phase != Phase::Busy {
                        break (None, phase == Phase::Idle);
                    }
                    // Turned busy since it was picked: let the request finish.
                    http.as_mut().graceful_shutdown();
                    graceful = true;
                }
            }
            _ = stop.wait_for(|s| *s), if !graceful => {
                let phase = conn.phase().0;
                if phase != Phase::Busy {
                    break (Some("shutdown"), phase == Phase::Idle);
                }
                http.as_mut().graceful_shutdown();
                graceful = true;
            }
        }
    };
    if let Some(reason) = close_reason {
        done.metrics
            .connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
    if idle {
        // The last response may still sit in hyper's write buffer (a request turns idle when
        // its response body has been taken, not written): hyper closes an idle connection
        // itself once that is flushed. A head in progress is not waited for (hyper would
        // keep reading it), nor is a client that does not take the last bytes.
        http.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, http.as_mut()).await;
    }
    // Returning drops the connection (closing the socket) and then `done`, a parameter,
    // which frees the slot.
}

/// The TCP stream, telling its [`Conn`] when bytes arrive and when writes wait for the
/// client.
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl TrackedIo {
    fn note_write<T>(&self, r: &Poll<std::io::Result<T>>) {
        match r {
            Poll::Pending => self.conn.write_blocked(),
            Poll::Ready(_) => self.conn.write_done(),
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service that marks its connection busy from the request's head
/// until its response body is done (or dropped).
#[derive(Clone)]
struct ConnService {
    router: Router,
    conn: Arc<Conn>,
    requests: Arc<RequestCap>,
}

/// Requests in progress over all connections, and how many may be.
#[derive(Debug)]
struct RequestCap {
    in_progress: AtomicUsize,
    max: usize,
    refused: prometheus_client::metrics::counter::Counter,
}

impl RequestCap {
    /// Counts a request in; false (and not counted) if it must be refused.
    fn enter(&self, exempt: bool) -> bool {
        let before = self.in_progress.fetch_add(1, Ordering::Relaxed);
        if before >= self.max && !exempt {
            self.in_progress.fetch_sub(1, Ordering::Relaxed);
            self.refused.inc();
            return false;
        }
        true
    }
}

/// Whether a request is one of the operator's, served beyond the request cap.
fn operator_request(req: &Request<Incoming>) -> bool {
    req.method() == hyper::Method::GET && matches!(req.uri().path(), "/ready" | "/metrics")
}

/// Marks a request done when dropped: its connection's and the server's count.
struct BusyGuard(Arc<Conn>, Option<Arc<RequestCap>>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.end_request();
        if let Some(cap) = &self.1 {
            cap.in_progress.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.conn.begin_request();
        if !self.requests.enter(operator_request(&req)) {
            // Its body, if any, is left unread: hyper closes the connection after this answer.
            let refusal = super::ApiError::new(
                super::ErrorClass::Overloaded,
                format!(
                    "{} requests in progress, the most this server takes besides /ready and \
                     /metrics; retry later",
                    self.requests.max
                ),
            );
            let guard = BusyGuard(self.conn.clone(), None);
            let resp = axum::response::IntoResponse::into_response(refusal);
            return Box::pin(std::future::ready(Ok(resp.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))));
        }
        let guard = BusyGuard(self.conn.clone(), Some(self.requests.clone()));
        let mut router = self.router.clone();
        Box::pin(async move {
            // A Router is always ready (its poll_ready returns Ready at once).
            let resp = match tower_service::Service::call(&mut router, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok(resp.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its connection busy until it is sent or dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _guard: BusyGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_keep_connections_however_many_requests_are_in_progress() {
        assert_eq!(reserved_for_operators(4096), 128);
        assert_eq!(reserved_for_operators(64), 4);
        assert_eq!(reserved_for_operators(2), 1);
        let cap = RequestCap {
            in_progress: AtomicUsize::new(0),
            max: 2,
            refused: Default::default(),
        };
        assert!(cap.enter(false) && cap.enter(false));
        assert!(!cap.enter(false), "a third request past a cap of 2");
        assert!(cap.enter(true), "/ready past the cap");
        assert_eq!(cap.in_progress.load(Ordering::Relaxed), 3);
        assert_eq!(cap.refused.get(), 1);
    }

    #[test]
    fn the_cap_leaves_the_fd_reserve_free() {
        assert_eq!(cap_for_fd_limit(4096, 1024), 1024 - FD_RESERVE as usize);
        assert_eq!(cap_for_fd_limit(4096, 1 << 20), 4096);
        assert_eq!(cap_for_fd_limit(100, 0), 16);
    }

    #[test]
    fn phases_close_by_their_own_timeout_and_busy_never_times_out() {
        let cfg = ServerConfig {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(60),
        };
        let t = Instant::now();
        assert_eq!(
            deadline(&cfg, Phase::Idle, t),
            Some((t + Duration::from_secs(120), "idle_timeout"))
        );
        assert_eq!(
            deadline(&cfg, Phase::Headers, t),
            Some((t + Duration::from_secs(10), "header_timeout"))
        );
        assert_eq!(deadline(&cfg, Phase::Busy, t), None);
    }

    #[test]
    fn eviction_picks_the_longest_unbusy_connection_and_never_a_busy_one() {
        let reg = Registry::default();
        let t0 = Instant::now();
        let busy_oldest = Arc::new(Conn::new(t0));
        busy_oldest.begin_request();
        busy_oldest.state.lock().since = t0;
        let idle_old = Arc::new(Conn::new(t0 + Duration::from_secs(1)));
        let headers_new = Arc::new(Conn::new(t0 + Duration::from_secs(2)));
        headers_new.state.lock().phase = Phase::Headers;
        for c in [&busy_oldest, &idle_old, &headers_new] {
            reg.add(c.clone());
        }
        assert!(reg.evict_oldest_unbusy());
        assert!(idle_old.evicted.load(Ordering::Relaxed));
        assert!(reg.evict_oldest_unbusy());
        assert!(headers_new.evicted.load(Ordering::Relaxed));
        assert!(!reg.evict_oldest_unbusy(), "only a busy connection is left");
        assert!(!busy_oldest.evicted.load(Ordering::Relaxed));
        // Its request done, the busy one becomes idle and may go.
        busy_oldest.end_request();
        assert!(reg.evict_oldest_unbusy());
    }

    #[test]
    fn bytes_start_the_header_deadline_only_when_idle() {
        let c = Conn::new(Instant::now());
        c.on_read();
        assert_eq!(c.phase().0, Phase::Headers);
        c.begin_request();
        c.on_read(); // body bytes: still busy
        assert_eq!(c.phase().0, Phase::Busy);
        c.end_request();
        assert_eq!(c.phase().0, Phase::Idle);
    }
}
