//! `/ring`: the ring as an operator wants to see it, HTML and JSON.
//!
//! The HTML page is self-contained (no script, no external asset) and escapes every value
//! it shows: instance ids, addresses and zones come from operators' flags.

use std::fmt::Write as _;

use serde_json::json;

use super::desc::InstanceState;
use super::membership::MembershipStatus;

/// The JSON answer of `GET /ring` (`Accept: application/json` or `?format=json`).
///
/// ```json
/// {"self": "weft-0", "replication_factor": 3, "etcd_up": true, "last_confirmed_ms": 1765000000000,
///  "lease_id": 7587, "endpoints": ["http://etcd:2379"], "prefix": "weft/", "healthy": true,
///  "instances": [{"id": "weft-0", "addr": "weft-0.weft:9090", "zone": "", "state": "ACTIVE",
///                 "tokens": 128, "ownership": 0.334, "registered_at_ms": 1765000000000,
///                 "updated_at_ms": 1765000000000, "self": true}, ...]}
/// ```
///
/// `ownership` is the instance's share of the token space as primary owner (0 to 1);
/// `healthy` is whether at least `replication_factor` instances are ACTIVE.
pub fn render_json(status: &MembershipStatus) -> serde_json::Value {
    let ring = &status.ring;
    let ownership = ring.ownership();
    let instances: Vec<serde_json::Value> = ring
        .instances()
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            json!({
                "id": inst.id,
                "addr": inst.addr,
                "zone": inst.zone,
                "state": inst.state.as_str(),
                "tokens": inst.tokens.len(),
                "ownership": ownership.get(i).copied().unwrap_or(0.0),
                "registered_at_ms": inst.registered_at_ms,
                "updated_at_ms": inst.updated_at_ms,
                "self": inst.id == status.self_id,
            })
        })
        .collect();
    json!({
        "self": status.self_id,
        "replication_factor": status.replication_factor,
        "etcd_up": status.etcd_up,
        "last_confirmed_ms": status.last_confirmed_ms,
        "lease_id": status.lease_id,
        "endpoints": status.endpoints,
        "prefix": status.prefix,
        "instances": instances,
        "healthy": healthy(status),
        "lost": status.lost,
    })
}

/// Whether at least `replication_factor` instances are ACTIVE.
pub fn healthy(status: &MembershipStatus) -> bool {
    let active = status
        .ring
        .instances()
        .iter()
        .filter(|i| i.state == InstanceState::Active)
        .count();
    active >= status.replication_factor
}

/// The HTML answer of `GET /ring`.
pub fn render_html(status: &MembershipStatus) -> String {
    render_html_at(status, now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// [`render_html`] as seen at `now_ms` (ms since the epoch): the ages it shows count
/// from there.
pub fn render_html_at(status: &MembershipStatus, now_ms: i64) -> String {
    let ring = &status.ring;
    let ownership = ring.ownership();
    let count = |s: InstanceState| ring.instances().iter().filter(|i| i.state == s).count();
    let mut h = String::with_capacity(4096 + ring.instances().len() * 400);
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>weft ring</title>\n<style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
         td.n{text-align:right}tr.self{font-weight:bold}.bad{color:#b00}.ok{color:#070}\
         </style></head><body>\n",
    );
    let _ = writeln!(h, "<h1>Ring of {}</h1>", esc(&status.self_id));
    let _ = write!(
        h,
        "<p>{} instances: {} ACTIVE, {} JOINING, {} LEAVING; replication factor {}; ",
        ring.instances().len(),
        count(InstanceState::Active),
        count(InstanceState::Joining),
        count(InstanceState::Leaving),
        status.replication_factor,
    );
    if healthy(status) {
        h.push_str("<span class=\"ok\">healthy</span>; ");
    } else {
        let _ = write!(
            h,
            "<span class=\"bad\">unhealthy: fewer than {} ACTIVE</span>; ",
            status.replication_factor
        );
    }
    if status.etcd_up {
        h.push_str("etcd <span class=\"ok\">up</span>; ");
    } else {
        h.push_str("etcd <span class=\"bad\">down</span>; ");
    }
    if status.last_confirmed_ms > 0 {
        let _ = writeln!(
            h,
            "ring confirmed {} ago.</p>",
            esc(&age(now_ms - status.last_confirmed_ms))
        );
    } else {
        h.push_str("ring never confirmed by etcd.</p>\n");
    }
    let endpoints: Vec<String> = status.endpoints.iter().map(|e| esc(e)).collect();
    let _ = writeln!(
        h,
        "<p>etcd {}, prefix <code>{}</code>, lease {:x}.</p>",
        endpoints.join(", "),
        esc(&status.prefix),
        status.lease_id
    );
    h.push_str(
        "<table>\n<tr><th>id</th><th>address</th><th>zone</th><th>state</th><th>tokens</th>\
         <th>ownership</th><th>registered</th><th>updated</th></tr>\n",
    );
    for (i, inst) in ring.instances().iter().enumerate() {
        let mine = inst.id == status.self_id;
        let _ = writeln!(
            h,
            "<tr{}><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.2} %</td><td>{}</td><td>{}</td></tr>",
            if mine { " class=\"self\"" } else { "" },
            esc(&inst.id),
            if mine { " (this node)" } else { "" },
            esc(&inst.addr),
            esc(&inst.zone),
            inst.state.as_str(),
            inst.tokens.len(),
            ownership.get(i).copied().unwrap_or(0.0) * 100.0,
            esc(&when(inst.registered_at_ms, now_ms)),
            esc(&when(inst.updated_at_ms, now_ms)),
        );
    }
    h.push_str("</table>\n");
    if !status.lost.is_empty() {
        h.push_str(
            "<p>Vanished without leaving (lease expired; reads count them as missing \
             replicas until they return):",
        );
        for id in &status.lost {
            h.push(' ');
            h.push_str(&esc(id));
        }
        h.push_str("</p>\n");
    }
    h.push_str("<p><a href=\"?format=json\">JSON</a></p>\n</body></html>\n");
    h
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped: safe in element text and in quoted
/// attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time as "2026-12-07 11:20:00 UTC (5m ago)"; "-" for 0 (not known).
fn when(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let at = chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    format!("{at} ({} ago)", age(now_ms - ms))
}

/// A duration in ms as "42s", "5m 3s", "2h 10m", "3d 4h"; a negative one (clocks apart)
/// as "0s".
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{InstanceDesc, Ring};
    use std::sync::Arc;

    const NOW: i64 = 1_765_000_000_000;

    fn inst(id: &str, zone: &str, state: InstanceState, tokens: Vec<u32>) -> InstanceDesc {
        InstanceDesc {
            id: id.to_string(),
            addr: format!("{id}:9090"),
            zone: zone.to_string(),
            state,
            tokens,
            registered_at_ms: NOW - 3_600_000,
            updated_at_ms: NOW - 5_000,
        }
    }

    fn status(instances: Vec<InstanceDesc>, rf: usize) -> MembershipStatus {
        MembershipStatus {
            self_id: "b".to_string(),
            replication_factor: rf,
            ring: Arc::new(Ring::new(instances)),
            etcd_up: true,
            last_confirmed_ms: NOW - 2_000,
            lease_id: 0x1d2b,
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "weft/".to_string(),
            lost: Vec::new(),
        }
    }

    fn three() -> Vec<InstanceDesc> {
        let q = 1u32 << 30;
        vec![
            inst("a", "z1", InstanceState::Active, vec![q, 3 * q]),
            inst("b", "z2", InstanceState::Active, vec![2 * q]),
            inst("c", "", InstanceState::Joining, vec![]),
        ]
    }

    #[test]
    fn json_has_every_field_and_the_ownership() {
        let v = render_json(&status(three(), 2));
        assert_eq!(v["self"], "b");
        assert_eq!(v["replication_factor"], 2);
        assert_eq!(v["etcd_up"], true);
        assert_eq!(v["last_confirmed_ms"], NOW - 2_000);
        assert_eq!(v["lease_id"], 0x1d2b);
        assert_eq!(v["endpoints"][0], "http://127.0.0.1:2379");
        assert_eq!(v["prefix"], "weft/");
        assert_eq!(v["healthy"], true);
        let insts = v["instances"].as_array().unwrap();
        assert_eq!(insts.len(), 3);
        assert_eq!(insts[0]["id"], "a");
        assert_eq!(insts[0]["addr"], "a:9090");
        assert_eq!(insts[0]["zone"], "z1");
        assert_eq!(insts[0]["state"], "ACTIVE");
        assert_eq!(insts[0]["tokens"], 2);
        assert_eq!(insts[0]["ownership"], 0.75);
        assert_eq!(insts[0]["registered_at_ms"], NOW - 3_600_000);
        assert_eq!(insts[0]["updated_at_ms"], NOW - 5_000);
        assert_eq!(insts[0]["self"], false);
        assert_eq!(insts[1]["ownership"], 0.25);
        assert_eq!(insts[1]["self"], true);
        assert_eq!(insts[2]["state"], "JOINING");
        assert_eq!(insts[2]["tokens"], 0);
        assert_eq!(insts[2]["ownership"], 0.0);
    }

    #[test]
    fn healthy_needs_rf_active_instances() {
        assert_eq!(render_json(&status(three(), 3))["healthy"], false);
        assert!(healthy(&status(three(), 2)));
        assert!(!healthy(&status(Vec::new(), 1)));
    }

    #[test]
    fn html_shows_the_summary_and_a_row_per_instance() {
        let page = render_html_at(&status(three(), 3), NOW);
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(
            page.contains("3 instances: 2 ACTIVE, 1 JOINING, 0 LEAVING; replication factor 3"),
            "{page}"
        );
        assert!(page.contains("unhealthy: fewer than 3 ACTIVE"), "{page}");
        assert!(page.contains("etcd <span class=\"ok\">up</span>"), "{page}");
        assert!(page.contains("ring confirmed 2s ago"), "{page}");
        assert!(page.contains("<td class=\"n\">75.00 %</td>"), "{page}");
        assert!(page.contains("b (this node)"), "{page}");
        assert!(
            page.contains("(1h 0m ago)") && page.contains("(5s ago)"),
            "{page}"
        );
        assert_eq!(page.matches("<tr").count(), 4, "{page}");
        assert!(
            !page.contains("<script") && !page.contains("src="),
            "{page}"
        );
    }

    #[test]
    fn html_shows_etcd_down_and_a_ring_never_confirmed() {
        let mut s = status(three(), 2);
        s.etcd_up = false;
        s.last_confirmed_ms = 0;
        let page = render_html_at(&s, NOW);
        assert!(
            page.contains("etcd <span class=\"bad\">down</span>"),
            "{page}"
        );
        assert!(page.contains("never confirmed"), "{page}");
        assert!(page.contains("<span class=\"ok\">healthy</span>"), "{page}");
    }

    #[test]
    fn html_escapes_every_operator_value() {
        let evil = "<script>alert('x')</script>&\"";
        let mut bad = inst(evil, evil, InstanceState::Leaving, vec![5]);
        bad.addr = evil.to_string();
        let mut s = status(vec![bad], 1);
        s.self_id = evil.to_string();
        s.prefix = evil.to_string();
        s.endpoints = vec![evil.to_string()];
        let page = render_html_at(&s, NOW);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("alert('x')"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"),
            "{page}"
        );
        // The JSON carries the raw value (serde escapes it as JSON).
        assert_eq!(render_json(&s)["instances"][0]["id"], evil);
    }

    #[test]
    fn ages_read_as_operators_say_them() {
        for (ms, want) in [
            (-5_000, "0s"),
            (59_999, "59s"),
            (61_000, "1m 1s"),
            (7_260_000, "2h 1m"),
            (90_000_000, "1d 1h"),
        ] {
            assert_eq!(age(ms), want);
        }
        assert_eq!(when(0, NOW), "-");
        assert!(when(NOW, NOW).ends_with("UTC (0s ago)"));
    }
}
