//! What one instance publishes in etcd: the value of `<prefix>ring/<instance id>`, JSON.

use serde::{Deserialize, Serialize};

/// An instance's state in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Registered with its tokens, not yet taking writes (replaying, or just registered).
    Joining,
    /// Taking writes for its tokens and answering reads.
    Active,
    /// Shutting down: no new writes; answers reads until it has flushed and left.
    Leaving,
}

impl InstanceState {
    /// The name the ring shows (`JOINING`, `ACTIVE`, `LEAVING`).
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Joining => "JOINING",
            InstanceState::Active => "ACTIVE",
            InstanceState::Leaving => "LEAVING",
        }
    }
}

/// One instance as registered in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDesc {
    /// `--ring.instance-id`.
    pub id: String,
    /// `--ring.instance-addr`: `host:port` of its HTTP listener, as its peers reach it.
    pub addr: String,
    /// `--ring.zone`, empty when unset.
    #[serde(default)]
    pub zone: String,
    /// Its state.
    pub state: InstanceState,
    /// Its tokens, sorted ascending, unique.
    pub tokens: Vec<u32>,
    /// When it first registered (this life), ms since the epoch.
    #[serde(default)]
    pub registered_at_ms: i64,
    /// When it last changed its entry, ms since the epoch.
    #[serde(default)]
    pub updated_at_ms: i64,
}

/// The most tokens an entry may carry; an entry with more is skipped as bad. Far above any
/// sane `--ring.num-tokens` (default 128), low enough that one entry cannot blow up the ring.
pub const MAX_ENTRY_TOKENS: usize = 16 * 1024;

/// The largest entry value read, in bytes (etcd's own default request limit is 1.5 MiB).
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

impl InstanceDesc {
    /// The JSON stored in etcd.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).expect("InstanceDesc serialises")
    }

    /// Reads the value of `<prefix>ring/<key_id>`. Never panics: whatever is wrong with the
    /// bytes comes back as a reason, and the caller skips the entry.
    pub fn from_json(key_id: &str, value: &[u8]) -> Result<InstanceDesc, String> {
        if value.len() > MAX_ENTRY_BYTES {
            return Err(format!(
                "{} bytes, more than {MAX_ENTRY_BYTES}",
                value.len()
            ));
        }
        let d: InstanceDesc = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if d.id.is_empty() || d.id != key_id {
            return Err(format!("id {:?} does not match the key's {key_id:?}", d.id));
        }
        if d.addr.is_empty() {
            return Err("empty addr".to_string());
        }
        if d.tokens.len() > MAX_ENTRY_TOKENS {
            return Err(format!(
                "{} tokens, more than {MAX_ENTRY_TOKENS}",
                d.tokens.len()
            ));
        }
        if d.tokens.windows(2).any(|w| w[0] >= w[1]) {
            return Err("tokens not sorted ascending and unique".to_string());
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: &str, tokens: Vec<u32>) -> InstanceDesc {
        InstanceDesc {
            id: id.to_string(),
            addr: "10.0.0.1:9201".to_string(),
            zone: String::new(),
            state: InstanceState::Active,
            tokens,
            registered_at_ms: 1,
            updated_at_ms: 2,
        }
    }

    #[test]
    fn entry_json_round_trips_with_state_in_capitals() {
        let d = desc("a", vec![1, 5, 9]);
        let json = d.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"state\":\"ACTIVE\""));
        assert_eq!(InstanceDesc::from_json("a", &json).unwrap(), d);
    }

    #[test]
    fn bad_entries_are_refused_not_panicked_on() {
        let ok = desc("a", vec![1, 2]).to_json();
        assert!(
            InstanceDesc::from_json("b", &ok).is_err(),
            "id differs from key"
        );
        for bad in [
            &b""[..],
            b"garbage",
            b"{}",
            b"[1,2]",
            b"{\"id\":\"a\",\"addr\":\"x:1\",\"state\":\"DEAD\",\"tokens\":[]}",
            b"{\"id\":\"a\",\"addr\":\"x:1\",\"state\":\"ACTIVE\",\"tokens\":[-1]}",
            b"{\"id\":\"a\",\"addr\":\"\",\"state\":\"ACTIVE\",\"tokens\":[]}",
            b"{\"id\":\"a\",\"addr\":\"x:1\",\"state\":\"ACTIVE\",\"tokens\":[3,2]}",
            b"{\"id\":\"a\",\"addr\":\"x:1\",\"state\":\"ACTIVE\",\"tokens\":[2,2]}",
            b"\xff\xfe{",
        ] {
            assert!(InstanceDesc::from_json("a", bad).is_err(), "{bad:?}");
        }
        // Every prefix of a good entry is refused or read, never a panic.
        for n in 0..ok.len() {
            let _ = InstanceDesc::from_json("a", &ok[..n]);
        }
    }

    #[test]
    fn entry_with_more_than_max_tokens_is_refused() {
        let at_limit = desc("a", (0..MAX_ENTRY_TOKENS as u32).collect());
        assert!(InstanceDesc::from_json("a", &at_limit.to_json()).is_ok());
        let over = desc("a", (0..=MAX_ENTRY_TOKENS as u32).collect());
        let err = InstanceDesc::from_json("a", &over.to_json()).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        let huge = vec![b' '; MAX_ENTRY_BYTES + 1];
        assert!(InstanceDesc::from_json("a", &huge).is_err());
    }
}
