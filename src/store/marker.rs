//! Keys the compactor keeps next to the objects: its lease and its compaction markers.
//!
//! ```text
//! <prefix>/<tenant>/chunks/<name>          an object (see [`super::object::ObjectKey`])
//! <prefix>/<tenant>/compacted/<seq:016x>   a compaction marker: these outputs replace these sources
//! <prefix>/compactor-lease/<gen:016x>      one generation of the compactor's lease
//! ```
//!
//! A marker is written after every output of one compaction job is in the store and before
//! any of its sources is deleted; it is deleted once every source is. A reader that lists
//! a marker whose outputs are all listed ignores the sources it names (they hold nothing the
//! outputs do not). A compactor that finds a marker finishes its deletions. The byte formats
//! are in `docs/formats.md` ("Compaction markers", "Compactor lease").
//!
//! **Invariant:** a source named in a marker is deleted only after the marker is in the
//! store, and the marker only after every output it names was acknowledged.

use object_store::path::{Path, PathPart};

use super::object::{percent_decode, CHUNKS_DIR};
use crate::model::TenantId;

/// The directory segment (after the tenant) of compaction markers.
pub const COMPACTED_DIR: &str = "compacted";

/// The top-level directory (under the prefix) of the lease generations.
pub const LEASE_DIR: &str = "compactor-lease";

/// Largest marker accepted; a marker names at most a few hundred objects.
pub const MAX_MARKER_BYTES: u64 = 1 << 20;

/// `<prefix>/<tenant>/compacted`.
pub fn markers_prefix(prefix: &Path, tenant: &TenantId) -> Path {
    prefix
        .clone()
        .join(PathPart::from(tenant.as_str()))
        .join(COMPACTED_DIR)
}

/// `<prefix>/compactor-lease`.
pub fn lease_prefix(prefix: &Path) -> Path {
    prefix.clone().join(LEASE_DIR)
}

/// What a listed key under `prefix` is, when it is not an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlKey {
    /// A compaction marker of this tenant.
    Marker(TenantId),
    /// A lease generation.
    Lease(u64),
}

/// Recognises the lease and marker keys, so that a listing skips them quietly.
pub fn parse_control_key(prefix: &Path, path: &Path) -> Option<ControlKey> {
    let parts: Vec<_> = path.prefix_match(prefix)?.collect();
    match parts.as_slice() {
        [dir, gen] if dir.as_ref() == LEASE_DIR => {
            let g = gen.as_ref();
            (g.len() == 16)
                .then(|| u64::from_str_radix(g, 16).ok())
                .flatten()
                .map(ControlKey::Lease)
        }
        [tenant, dir, _] if dir.as_ref() == COMPACTED_DIR => {
            let t = percent_decode(tenant.as_ref())?;
            TenantId::parse(&t).ok().map(ControlKey::Marker)
        }
        _ => None,
    }
}

/// A compaction marker: object names (the last key segment) under `<tenant>/chunks/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    /// The objects the job wrote.
    pub outputs: Vec<String>,
    /// The objects they replace.
    pub sources: Vec<String>,
}

impl Marker {
    /// The text form: `weft-compaction-marker 1`, then one `output <name>` or
    /// `source <name>` line each.
    pub fn encode(&self) -> String {
        let mut s = String::from("weft-compaction-marker 1\n");
        for o in &self.outputs {
            s.push_str("output ");
            s.push_str(o);
            s.push('\n');
        }
        for o in &self.sources {
            s.push_str("source ");
            s.push_str(o);
            s.push('\n');
        }
        s
    }

    /// The inverse of [`encode`](Self::encode); `None` on anything else (a name with a `/`
    /// or a control character, an unknown line, no outputs).
    pub fn decode(b: &[u8]) -> Option<Marker> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "weft-compaction-marker 1" {
            return None;
        }
        let mut m = Marker::default();
        for l in lines {
            let (kind, name) = l.split_once(' ')?;
            // Object names are printable: a control character (a `\r` above all, which
            // `lines` strips before a `\n`) would not survive a round trip.
            if name.is_empty()
                || name.contains('/')
                || name == CHUNKS_DIR
                || name.chars().any(char::is_control)
            {
                return None;
            }
            match kind {
                "output" => m.outputs.push(name.to_owned()),
                "source" => m.sources.push(name.to_owned()),
                _ => return None,
            }
        }
        (!m.outputs.is_empty()).then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_keys_are_recognised_and_objects_are_not() {
        let p = Path::from("weft");
        let t = TenantId::parse("team-a").unwrap();
        assert_eq!(
            parse_control_key(&p, &lease_prefix(&p).join("00000000000000ff")),
            Some(ControlKey::Lease(255))
        );
        assert_eq!(
            parse_control_key(&p, &markers_prefix(&p, &t).join("0000000000000001")),
            Some(ControlKey::Marker(t.clone()))
        );
        assert_eq!(
            parse_control_key(&p, &Path::from("weft/team-a/chunks/x")),
            None
        );
        assert_eq!(
            parse_control_key(&p, &Path::from("weft/compactor-lease/xyz")),
            None
        );
    }

    #[test]
    fn a_marker_round_trips() {
        let m = Marker {
            outputs: vec!["a-b-compactor-l1-0".into()],
            sources: vec!["x".into(), "y".into()],
        };
        assert_eq!(Marker::decode(m.encode().as_bytes()), Some(m));
        assert_eq!(
            Marker::decode(b"weft-compaction-marker 1\nsource x\n"),
            None
        );
        assert_eq!(
            Marker::decode(b"weft-compaction-marker 1\noutput a/b\n"),
            None
        );
        // Found by the fuzz target: a name ending in `\r` decoded, and re-encoded to
        // another name (`lines` drops a `\r` before the `\n`).
        assert_eq!(
            Marker::decode(b"weft-compaction-marker 1\noutput \x01\nsource \0\0\r\0\0\r"),
            None
        );
    }

    proptest! {
        /// Any bytes: the decoder never panics, and what it accepts re-encodes to itself.
        #[test]
        fn marker_decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(m) = Marker::decode(&bytes) {
                prop_assert_eq!(Marker::decode(m.encode().as_bytes()), Some(m));
            }
        }
    }
}
