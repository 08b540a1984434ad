//! An etcd that is not open to everyone, as a Kubernetes control plane's is: TLS with client
//! certificates (`--client-cert-auth`), and etcd's own user authentication.
//!
//! Real etcd, real certificates (made with the `openssl` command for each run), the real
//! binary:
//! - with `--ring.etcd-tls-{ca,cert,key}-path` a node joins an etcd that asks for client
//!   certificates, turns ACTIVE, takes a push and reads it back;
//! - without a client certificate it never joins (never ready), and says why;
//! - inconsistent flags (a certificate without its key, a plain endpoint with TLS on, a user
//!   without a password) stop it at once with the reason;
//! - with `--ring.etcd-username` and `WEFT_RING_ETCD_PASSWORD` a node joins an etcd with
//!   authentication on; with a wrong password it never joins, and says why.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{Etcd, EtcdTls};
use common::*;
use weft::proto::prompb::{MatcherType, WriteRequest};

/// Runs `openssl` with `args` in `dir`, wanting success.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, etcd's certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=weft-test-ca",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "etcd"), ("client", "weft")] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// A weft that is not expected to become ready: its stderr lines, and whether `/ready`
/// answered 200 within `wait`. Killed before returning.
fn never_ready(args: &[&str], env: &[(&str, &str)], wait: Duration) -> (bool, String) {
    let dir = TempDir::new("weft-unready");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting weft");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let client = http_client();
    let deadline = Instant::now() + wait;
    let (mut lines, mut port, mut ready) = (Vec::new(), None, false);
    while Instant::now() < deadline {
        while let Ok(l) = rx.try_recv() {
            if port.is_none() {
                port = parse_listen_port(&l);
            }
            lines.push(l);
        }
        if let Some(p) = port {
            if client
                .get(format!("http://127.0.0.1:{p}/ready"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                ready = true;
                break;
            }
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(100));
    lines.extend(rx.try_iter());
    (ready, lines.join("\n"))
}

/// Runs weft with `args`, which must make it exit at once with an error; returns its stderr.
fn refused_at_start(args: &[&str]) -> String {
    let dir = TempDir::new("weft-refused");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weft {args:?} did not stop at once");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "weft {args:?} exited 0:\n{err}");
    err
}

/// One instance ACTIVE in the node's own `/ring` and etcd reported up in `/metrics`.
fn assert_active_alone(w: &Weft, id: &str) {
    let r = w.client().get(w.url("/ring?format=json")).send().unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    let inst = v["instances"].as_array().expect("instances");
    assert_eq!(inst.len(), 1, "{v}");
    assert_eq!(inst[0]["id"], id, "{v}");
    assert_eq!(inst[0]["state"], "ACTIVE", "{v}");
    assert!(
        w.metrics().lines().any(|l| l == "weft_ring_etcd_up 1"),
        "etcd up in /metrics"
    );
}

/// A push of `n` series and its exact read-back through the node.
fn push_and_read_back(w: &Weft, seed: u64, n: usize) {
    let t0 = now_ms() - 60_000;
    let want: BTreeMap<Labels, Samples> = (0..n)
        .map(|i| {
            let l = labels(&[("__name__", "etcd_secured"), ("i", &i.to_string())]);
            let s = (0..20)
                .map(|k| {
                    let v = common::workload::mix(seed ^ ((i as u64) << 20) ^ k);
                    (t0 + k as i64 * 1000, v)
                })
                .collect();
            (l, s)
        })
        .collect();
    let req = WriteRequest {
        timeseries: want.iter().map(|(l, s)| series_proto(l, s)).collect(),
        metadata: Vec::new(),
    };
    w.push_ok("secure", &req);
    let q = query(
        t0 - 1,
        t0 + 60_000,
        vec![matcher(MatcherType::Eq, "__name__", "etcd_secured")],
    );
    let got: BTreeMap<Labels, Samples> = w.read_samples(Some("secure"), &[q])[0]
        .iter()
        .cloned()
        .collect();
    assert_eq!(got, want, "read back through a node on a secured etcd");
}

#[test]
fn a_ring_on_an_etcd_with_client_certificates() {
    let seed = seed();
    if !require(
        "openssl",
        Command::new("openssl").arg("version").output().is_ok(),
        "apt-get install openssl",
    ) {
        return;
    }
    let certs = TempDir::new("weft-etcd-certs");
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let Some(etcd) = Etcd::start_with(Some(&EtcdTls {
        cert: certs.path().join("server.pem"),
        key: certs.path().join("server.key"),
        ca: certs.path().join("ca.pem"),
    })) else {
        return;
    };
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"));
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client.key"));
    let base = [
        "--ring.etcd-endpoints",
        endpoint.as_str(),
        "--ring.replication-factor",
        "1",
        "--ring.heartbeat-timeout",
        "3s",
        "--ring.num-tokens",
        "16",
    ];

    // With the CA and a client certificate: joins, ACTIVE, works.
    let mut args = base.to_vec();
    args.extend([
        "--ring.instance-id",
        "tls-1",
        "--ring.etcd-tls-ca-path",
        &ca,
        "--ring.etcd-tls-cert-path",
        &cert,
        "--ring.etcd-tls-key-path",
        &key,
    ]);
    let w = Weft::start(&args);
    assert_active_alone(&w, "tls-1");
    push_and_read_back(&w, seed, 25);

    // Trusting etcd but without a client certificate: etcd refuses the handshake; the node
    // keeps trying, never ready, and says why.
    let mut args = base.to_vec();
    args.extend([
        "--ring.instance-id",
        "tls-2",
        "--ring.etcd-tls-ca-path",
        &ca,
    ]);
    let (ready, log) = never_ready(&args, &[], Duration::from_secs(6));
    assert!(
        !ready,
        "a node without a client certificate became ready:\n{log}"
    );
    assert!(
        log.contains("ring: etcd call failed") || log.contains("ring: connecting to etcd"),
        "the log must say it cannot reach etcd:\n{log}"
    );
    // Without the CA, etcd's certificate is not trusted (the system roots do not have it).
    let mut args = base.to_vec();
    args.extend([
        "--ring.instance-id",
        "tls-3",
        "--ring.etcd-tls-cert-path",
        &cert,
        "--ring.etcd-tls-key-path",
        &key,
    ]);
    let (ready, log) = never_ready(&args, &[], Duration::from_secs(6));
    assert!(!ready, "a node that cannot trust etcd became ready:\n{log}");
    assert!(
        log.contains("ring: etcd call failed") || log.contains("ring: connecting to etcd"),
        "the log must say it cannot reach etcd:\n{log}"
    );
    // Still exactly one instance in the ring: the refused ones never registered.
    assert_active_alone(&w, "tls-1");

    // Inconsistent flags stop the node at once, with the reason.
    let mut args = base.to_vec();
    args.extend([
        "--ring.etcd-tls-ca-path",
        &ca,
        "--ring.etcd-tls-cert-path",
        &cert,
    ]);
    let err = refused_at_start(&args);
    assert!(
        err.contains("--ring.etcd-tls-cert-path and --ring.etcd-tls-key-path go together"),
        "{err}"
    );
    let plain = format!("http://127.0.0.1:{}", etcd.port());
    let err = refused_at_start(&[
        "--ring.etcd-endpoints",
        &plain,
        "--ring.etcd-tls-ca-path",
        &ca,
    ]);
    assert!(err.contains("is not https://"), "{err}");
    let err = refused_at_start(&[
        "--ring.etcd-endpoints",
        &endpoint,
        "--ring.etcd-tls-ca-path",
        "/nonexistent/ca.pem",
    ]);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn a_ring_on_an_etcd_with_authentication() {
    let seed = seed();
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint.as_str()], None)
            .await
            .expect("etcd client");
        c.user_add("root", "root-secret", None)
            .await
            .expect("user root");
        // Newer etcds create the root role with the first root user; 3.4 needs it made.
        let _ = c.role_add("root").await;
        c.user_grant_role("root", "root").await.expect("grant root");
        c.auth_enable().await.expect("auth enable");
    });

    let base = [
        "--ring.etcd-endpoints",
        endpoint.as_str(),
        "--ring.replication-factor",
        "1",
        "--ring.heartbeat-timeout",
        "3s",
        "--ring.num-tokens",
        "16",
    ];
    // The password from the environment, as the docs advise.
    let mut args = base.to_vec();
    args.extend([
        "--ring.instance-id",
        "auth-1",
        "--ring.etcd-username",
        "root",
    ]);
    let w = Weft::start_with_env(
        None,
        &args,
        &[("WEFT_RING_ETCD_PASSWORD".into(), "root-secret".into())],
        None,
    );
    assert_active_alone(&w, "auth-1");
    push_and_read_back(&w, seed, 10);

    // A wrong password: never joins, and the log says etcd refused it.
    let mut args = base.to_vec();
    args.extend([
        "--ring.instance-id",
        "auth-2",
        "--ring.etcd-username",
        "root",
    ]);
    let (ready, log) = never_ready(
        &args,
        &[("WEFT_RING_ETCD_PASSWORD", "Wr0ng-p4ss-9317")],
        Duration::from_secs(6),
    );
    assert!(!ready, "a node with a wrong password became ready:\n{log}");
    assert!(
        log.to_lowercase().contains("authentication failed"),
        "the log must say etcd refused the credentials:\n{log}"
    );
    assert!(
        !log.contains("wrong"),
        "the password must never be logged:\n{log}"
    );
    // No credentials at all: etcd refuses every call.
    let mut args = base.to_vec();
    args.extend(["--ring.instance-id", "auth-3"]);
    let (ready, _) = never_ready(&args, &[], Duration::from_secs(6));
    assert!(!ready, "a node without credentials became ready");
    assert_active_alone(&w, "auth-1");

    let err = refused_at_start(&[
        "--ring.etcd-endpoints",
        &endpoint,
        "--ring.etcd-username",
        "root",
    ]);
    assert!(
        err.contains("--ring.etcd-username needs --ring.etcd-password"),
        "{err}"
    );
}
