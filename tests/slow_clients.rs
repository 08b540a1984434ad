//! Bad clients against the real binary, over raw sockets: before the HTTP server had
//! timeouts and a connection cap, 16 chunked pushes dribbling one byte a second took the
//! whole push-bytes budget (each reserved the 16 MiB limit up front), 300 slow
//! Content-Length bodies took every write slot, idle connections were never closed (about
//! 20,000 of them reached the fd limit and stalled `/ready`), a header slowloris was kept for
//! ever, and a body far over the size limit, written whole before reading the answer, got a
//! broken pipe instead of its 413.
//!
//! Each test states what a legitimate client must still get while the bad ones hold their
//! sockets, and when the bad ones must be gone.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use prost::Message;
use weft::proto::prompb::WriteRequest;

/// A fresh connection to the server.
fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads a response head from `s` (within `timeout`) and returns its status code.
fn read_status(s: &mut TcpStream, timeout: Duration) -> Result<u16, String> {
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err(format!("closed after {} bytes of answer", head.len())),
            Ok(n) => head.extend_from_slice(&byte[..n]),
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {line:?}"))?;
    Ok(code)
}

/// One request on a fresh connection: its status and how long the answer took.
fn exchange(
    port: u16,
    head: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let mut s = connect(port);
    s.set_write_timeout(Some(timeout)).expect("write timeout");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("sending: {e}"))?;
    let code = read_status(&mut s, timeout)?;
    Ok((code, started.elapsed()))
}

fn get(port: u16, path: &str, timeout: Duration) -> Result<(u16, Duration), String> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n"),
        b"",
        timeout,
    )
}

/// A valid remote-write body: one sample of a series named after `tag`.
fn legit_body(tag: &str) -> Vec<u8> {
    let labels = labels(&[("__name__", "weft_test_slow_clients"), ("tag", tag)]);
    let req = WriteRequest {
        timeseries: vec![series_proto(&labels, &[(now_ms(), 1.5f64.to_bits())])],
        metadata: vec![],
    };
    snappy(&req.encode_to_vec())
}

/// A legitimate push on a fresh connection, as Prometheus sends it.
fn legit_push(port: u16, tag: &str, timeout: Duration) -> Result<(u16, Duration), String> {
    let body = legit_body(tag);
    exchange(
        port,
        &format!(
            "POST /api/v1/push HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
             Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        &body,
        timeout,
    )
}

/// Asserts that `n` legitimate pushes each get 204 within `within`.
fn assert_legit_pushes_succeed(w: &Weft, n: usize, within: Duration, while_what: &str) {
    for i in 0..n {
        let got = legit_push(
            w.port,
            &format!("{while_what}-{i}"),
            Duration::from_secs(10),
        );
        match got {
            Ok((204, took)) if took <= within => {}
            other => panic!(
                "legitimate push {i} while {while_what}: want 204 within {within:?}, got {other:?}\n{}",
                w.log_tail()
            ),
        }
    }
}

/// The soft fd limit of this test process, raised to the hard limit first (as weft does).
fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit to the hard one
        // needs no privilege. On failure the old limit stays, and is what getrlimit reports.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    }
    #[allow(clippy::unnecessary_cast)]
    let cur = lim.rlim_cur as u64;
    cur
}

/// Whether the server has closed `s` (EOF or reset), looking for at most `wait`.
fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a 408, say) before the close: keep reading to the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn chunked_pushes_dribbling_a_byte_a_second_leave_the_push_budget_to_others() {
    // The defaults of the budget and the size limit: 256 MiB and 16 MiB, the finding's setup.
    // The body deadline is long, so the dribblers stay for the whole test: what is checked is
    // that they hold only the bytes they sent, not that they are cut.
    let w = Weft::start(&["--server.http-body-read-timeout", "60s"]);
    const DRIBBLERS: usize = 24;
    let head =
        "POST /api/v1/push HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
                Content-Encoding: snappy\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut dribblers: Vec<TcpStream> = (0..DRIBBLERS)
        .map(|_| {
            let mut s = connect(w.port);
            s.write_all(head.as_bytes())
                .expect("sending a dribbler's head");
            s
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(6) {
        for s in &mut dribblers {
            s.write_all(b"1\r\nx\r\n").expect("a dribbler's byte");
        }
        sent += 1;
        if sent >= 2 {
            assert_legit_pushes_succeed(&w, 2, Duration::from_secs(2), "chunked pushes dribble");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let inflight = w
        .metric("weft_inflight_push_bytes", &[])
        .expect("weft_inflight_push_bytes");
    // Each dribbler has sent a few bytes and holds one KiB of the budget; reserving at the
    // limit, they held 16 MiB each.
    assert!(
        inflight <= (DRIBBLERS as f64) * 4096.0,
        "{DRIBBLERS} dribbling pushes hold {inflight} bytes of the push budget"
    );
    // The dribblers are still there, not cut: the budget alone let the others through.
    for (i, s) in dribblers.iter_mut().enumerate() {
        assert!(
            !closed_by_server(s, Duration::from_millis(10)),
            "dribbler {i} was closed before its body deadline"
        );
    }
}

#[test]
fn slow_content_length_bodies_are_cut_and_never_take_the_write_slots() {
    // 300 slow bodies against the default 256 write slots; each declares 100 kB, so its
    // deadline is 3 s plus 100 kB at the default 256 KiB/s, about 3.4 s.
    const SLOW: usize = 300;
    const DECLARED: usize = 100_000;
    let body_timeout = Duration::from_secs(3);
    let allowance = body_timeout + Duration::from_secs_f64(DECLARED as f64 / 262_144.0);
    let w = Weft::start(&["--server.http-body-read-timeout", "3s"]);
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = connect(w.port);
            s.write_all(head.as_bytes())
                .and_then(|()| s.write_all(b"0123456789"))
                .expect("sending a slow body's start");
            s
        })
        .collect();
    // While they are all on their way in, legitimate pushes go through at once.
    std::thread::sleep(Duration::from_millis(500));
    assert_legit_pushes_succeed(&w, 5, Duration::from_secs(2), "300 slow bodies");
    let slots = w
        .metric("weft_inflight_requests", &[("reason", "write")])
        .unwrap_or(0.0);
    assert!(slots <= 1.0, "slow bodies hold {slots} write slots");

    // Past their deadline, each is answered 408 or closed, and its connection goes.
    let mut cut = 0;
    let mut answered_408 = 0;
    let give_up = started + allowance + Duration::from_secs(10);
    for (i, s) in slow.iter_mut().enumerate() {
        let left = give_up
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match read_status(s, left) {
            Ok(408) => answered_408 += 1,
            Ok(other) => panic!("slow body {i} answered {other}, want 408"),
            // A reset while still sending is a cut too.
            Err(e) if e.contains("closed") || e.contains("reset") => {}
            Err(e) => panic!("slow body {i} not cut within {allowance:?} + 10s: {e}"),
        }
        cut += 1;
    }
    let took = started.elapsed();
    assert!(
        took >= body_timeout,
        "slow bodies were cut after {took:?}, before the body timeout"
    );
    eprintln!("{cut} slow bodies cut ({answered_408} answered 408) in {took:?}");
    let timeouts = w
        .metric(
            "weft_requests_rejected_total",
            &[("reason", "body_timeout")],
        )
        .unwrap_or(0.0);
    assert!(
        timeouts >= SLOW as f64 * 0.9,
        "weft_requests_rejected_total{{reason=\"body_timeout\"}} is {timeouts}"
    );
    drop(slow);
    assert_legit_pushes_succeed(&w, 2, Duration::from_secs(2), "after the cut");
}

#[test]
fn thousands_of_idle_connections_neither_stall_ready_nor_stay_open() {
    // Stay well under this process's fd limit, and far over the server's cap.
    // 1024 fds are left for the other tests of this file, which run alongside.
    let limit = fd_limit();
    let idle_count = limit.saturating_sub(1024).min(3000) as usize;
    if !require(
        "an fd limit of at least 1324",
        idle_count >= 300,
        &format!("this process may open {limit} files; raise `ulimit -n`"),
    ) {
        return;
    }
    // Far over the cap: 400 of 3000.
    let cap_count = (idle_count * 2 / 15).max(32);
    let idle_timeout = Duration::from_secs(4);
    let cap = cap_count.to_string();
    let w = Weft::start(&[
        "--server.max-connections",
        &cap,
        "--server.http-idle-timeout",
        "4s",
    ]);
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..idle_count).map(|_| connect(w.port)).collect();
    eprintln!(
        "{idle_count} idle connections opened in {:?}",
        opened.elapsed()
    );
    for i in 0..5 {
        for path in ["/ready", "/metrics"] {
            match get(w.port, path, Duration::from_secs(5)) {
                Ok((200, took)) if took <= Duration::from_secs(2) => {}
                other => panic!(
                    "{path} (try {i}) with {idle_count} idle connections: want 200 within 2s, \
                     got {other:?}\n{}",
                    w.log_tail()
                ),
            }
        }
    }
    let open = w
        .metric("weft_http_connections", &[])
        .expect("weft_http_connections");
    assert!(
        open <= cap_count as f64,
        "{open} connections open, over the cap of {cap_count}"
    );

    // After the idle timeout every one of them is closed by the server.
    std::thread::sleep(idle_timeout + Duration::from_secs(2));
    let still_open: Vec<usize> = idle
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| (!closed_by_server(s, Duration::from_millis(1))).then_some(i))
        .collect();
    assert!(
        still_open.is_empty(),
        "{} of {idle_count} idle connections still open {:?} after the idle timeout, e.g. {:?}",
        still_open.len(),
        idle_timeout + Duration::from_secs(2),
        &still_open[..still_open.len().min(5)]
    );
    let by_idle = w
        .metric(
            "weft_http_connections_closed_total",
            &[("reason", "idle_timeout")],
        )
        .unwrap_or(0.0);
    let by_eviction = w
        .metric(
            "weft_http_connections_closed_total",
            &[("reason", "evicted")],
        )
        .unwrap_or(0.0);
    eprintln!("closed: {by_idle} by the idle timeout, {by_eviction} evicted at the cap");
    assert!(
        by_idle >= 1.0 && by_eviction >= 1.0,
        "idle {by_idle}, evicted {by_eviction}"
    );
    w.assert_still_serves("after idle connections");
}

#[test]
fn a_header_slowloris_is_closed_after_the_header_timeout_and_idle_ones_are_not() {
    let w = Weft::start(&["--server.http-read-header-timeout", "2s"]);
    let mut quiet = connect(w.port);
    let mut loris = connect(w.port);
    let started = Instant::now();
    loris
        .write_all(b"POST /api/v1/push HTTP/1.1\r\nHost: weft\r\n")
        .expect("the slowloris' first line");
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(8) {
        if loris.write_all(b"X").is_err()
            || closed_by_server(&mut loris, Duration::from_millis(250))
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let took = closed_after.unwrap_or_else(|| {
        panic!(
            "a header sent a byte every 250ms was still open after 8s\n{}",
            w.log_tail()
        )
    });
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(4),
        "slowloris closed after {took:?}, want about the 2s header timeout"
    );
    // The quiet connection sent nothing: it is idle, governed by the 2m idle timeout.
    assert!(
        !closed_by_server(&mut quiet, Duration::from_millis(100)),
        "an idle connection was closed at the header timeout"
    );
    let n = w
        .metric(
            "weft_http_connections_closed_total",
            &[("reason", "header_timeout")],
        )
        .unwrap_or(0.0);
    assert!(n >= 1.0, "header timeouts counted: {n}");
    // It still serves requests.
    quiet
        .write_all(b"GET /ready HTTP/1.1\r\nHost: weft\r\n\r\n")
        .expect("a request on the quiet connection");
    assert_eq!(read_status(&mut quiet, Duration::from_secs(5)), Ok(200));
}

#[test]
fn a_body_far_over_the_limit_sent_whole_before_reading_gets_its_413() {
    // The default 16 MiB limit; the body is 300 MiB, written whole by a blocking client that
    // reads only afterwards, as most HTTP clients do.
    const BODY: usize = 300 << 20;
    let w = Weft::start(&[]);
    let started = Instant::now();
    let mut s = connect(w.port);
    s.set_write_timeout(Some(Duration::from_secs(60)))
        .expect("write timeout");
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nContent-Length: {BODY}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("sending the head");
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..BODY / chunk.len() {
        if let Err(e) = s.write_all(&chunk) {
            panic!(
                "writing MiB {i} of the over-size body failed ({e}): the server closed before the \
                 client could read its answer\n{}",
                w.log_tail()
            );
        }
    }
    let code = read_status(&mut s, Duration::from_secs(30));
    assert_eq!(code, Ok(413), "answer to a 300 MiB body\n{}", w.log_tail());
    eprintln!("300 MiB sent and 413 read in {:?}", started.elapsed());
    w.assert_still_serves("after an over-size body");
}

#[test]
fn shutdown_lets_a_push_in_progress_finish_and_closes_idle_connections() {
    let mut w = Weft::start(&[]);
    let mut idle = connect(w.port);
    let body = legit_body("shutdown");
    let mut pushing = connect(w.port);
    let half = body.len() / 2;
    pushing
        .write_all(
            format!(
                "POST /api/v1/push HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
                 Content-Encoding: snappy\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .and_then(|()| pushing.write_all(&body[..half]))
        .expect("the first half of a push");
    std::thread::sleep(Duration::from_millis(300));
    w.signal(libc::SIGTERM);
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(5)),
        "an idle connection stayed open after SIGTERM"
    );
    // The push in progress is served to its end.
    pushing
        .write_all(&body[half..])
        .expect("the second half of a push");
    assert_eq!(
        read_status(&mut pushing, Duration::from_secs(10)),
        Ok(204),
        "a push in progress at SIGTERM\n{}",
        w.log_tail()
    );
    let status = w.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "weft exited with {status} after SIGTERM");
}

#[test]
fn with_slow_bodies_on_every_connection_ready_and_metrics_still_answer() {
    // A cap of 64 keeps 4 connections for the operator: at most 60 requests are served at
    // once, so 80 slow bodies cannot make every connection busy.
    const CAP: usize = 64;
    const SLOW: usize = 80;
    let cap = CAP.to_string();
    let w = Weft::start(&["--server.max-connections", &cap]);
    let head =
        "POST /api/v1/push HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
                Content-Encoding: snappy\r\nContent-Length: 100000\r\n\r\n";
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..SLOW {
        let mut s = connect(w.port);
        // A refused one may be closed already; that is the point.
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(b"0123456789"));
        slow.push(s);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        for path in ["/ready", "/metrics"] {
            match get(w.port, path, Duration::from_secs(5)) {
                Ok((200, took)) if took <= Duration::from_secs(2) => {}
                other => panic!(
                    "{path} (try {i}) with {SLOW} slow bodies and a cap of {CAP}: want 200 \
                     within 2s, got {other:?}\n{}",
                    w.log_tail()
                ),
            }
        }
    }
    let refused = w
        .metric("weft_http_requests_refused_total", &[])
        .unwrap_or(0.0);
    assert!(
        refused >= (SLOW - (CAP - 4)) as f64,
        "{refused} requests refused past the request cap, want at least {}",
        SLOW - (CAP - 4)
    );
}

/// A client that sends requests and never reads the answers (here: pipelined `/metrics`
/// requests whose answers fill both socket buffers) holds its connection only until
/// `--server.http-write-timeout`; meanwhile others are served.
#[test]
fn a_client_that_stops_reading_its_answers_is_cut_at_the_write_timeout() {
    let w = Weft::start(&["--server.http-write-timeout", "2s"]);
    let mut s = connect(w.port);
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let req = b"GET /metrics HTTP/1.1\r\nHost: weft\r\n\r\n";
    let mut sent = 0;
    for _ in 0..3000 {
        if s.write_all(req).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 100, "could send only {sent} requests");
    let started = Instant::now();
    let cut = loop {
        let n = w
            .metric(
                "weft_http_connections_closed_total",
                &[("reason", "write_timeout")],
            )
            .unwrap_or(0.0);
        if n >= 1.0 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a client reading nothing for 20s was not cut (2s write timeout)\n{}",
            w.log_tail()
        );
        // Others are served meanwhile.
        let (status, took) = get(w.port, "/ready", Duration::from_secs(2)).expect("/ready");
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(2), "/ready took {took:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("{sent} pipelined requests never read; the connection was cut after {cut:?}");
    // What the buffers held drains, then the stream ends.
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("after {total} bytes the connection neither ended nor reset: {e}"),
        }
    }
    assert!(total > 0, "some answers were written before the stall");
}
