//! One tenant's metric metadata: the latest type, help and unit of each metric family.
//!
//! Bounded in families ([`Families::set`] refuses a new family once the tenant has its
//! limit; existing families keep being updated) and in bytes per entry
//! ([`MAX_HELP_BYTES`], [`MAX_NAME_BYTES`]).

use rustc_hash::FxHashMap;

use crate::proto::MetricType;

/// Longest help text kept, in bytes (Mimir's `-validation.max-metadata-length` default).
pub const MAX_HELP_BYTES: usize = 1024;
/// Longest family name and unit kept, in bytes (same bound).
pub const MAX_NAME_BYTES: usize = 1024;
/// Estimated bytes of one entry besides its strings.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// What one family is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Its type.
    pub kind: MetricType,
    /// Help text.
    pub help: Box<str>,
    /// Unit.
    pub unit: Box<str>,
}

/// Why a metadata entry was not stored. [`Refusal::reason`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The tenant's limit is 0.
    #[error("metadata storage is disabled for this tenant")]
    Disabled,
    /// A new family past the tenant's limit.
    #[error("too many metric families with metadata for this tenant")]
    PerTenantLimit,
    /// An empty family name, or a name, help or unit over the length bounds.
    #[error("metadata too long or without a family name")]
    Invalid,
    /// Not UTF-8.
    #[error("metadata is not valid UTF-8")]
    NotUtf8,
}

impl Refusal {
    /// Every reason, for the metric.
    pub const ALL: [Refusal; 4] = [
        Refusal::Disabled,
        Refusal::PerTenantLimit,
        Refusal::Invalid,
        Refusal::NotUtf8,
    ];

    /// The `reason` label of `weft_metadata_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::PerTenantLimit => "per_tenant_limit",
            Refusal::Invalid => "invalid",
            Refusal::NotUtf8 => "invalid_utf8",
        }
    }
}

/// Checks the bounds of one entry.
pub fn check(family: &str, help: &str, unit: &str) -> Result<(), Refusal> {
    if family.is_empty()
        || family.len() > MAX_NAME_BYTES
        || unit.len() > MAX_NAME_BYTES
        || help.len() > MAX_HELP_BYTES
    {
        return Err(Refusal::Invalid);
    }
    Ok(())
}

/// What [`Families::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// A new family.
    Added,
    /// An existing family changed.
    Updated,
    /// Already so.
    Unchanged,
}

/// One tenant's families.
#[derive(Debug, Default)]
pub struct Families {
    map: FxHashMap<Box<str>, Meta>,
    bytes: u64,
}

fn entry_bytes(family: &str, m: &Meta) -> u64 {
    ENTRY_OVERHEAD_BYTES + (family.len() + m.help.len() + m.unit.len()) as u64
}

impl Families {
    /// Families held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sets `family`'s metadata (checked with [`check`]); a new family is refused once `limit`
    /// families are held.
    pub fn set(&mut self, family: &str, meta: Meta, limit: usize) -> Result<Set, Refusal> {
        if limit == 0 {
            return Err(Refusal::Disabled);
        }
        if let Some(m) = self.map.get_mut(family) {
            if *m == meta {
                return Ok(Set::Unchanged);
            }
            self.bytes -= entry_bytes(family, m);
            self.bytes += entry_bytes(family, &meta);
            *m = meta;
            return Ok(Set::Updated);
        }
        if self.map.len() >= limit {
            return Err(Refusal::PerTenantLimit);
        }
        self.bytes += entry_bytes(family, &meta);
        self.map.insert(family.into(), meta);
        Ok(Set::Added)
    }

    /// One family.
    pub fn get(&self, family: &str) -> Option<&Meta> {
        self.map.get(family)
    }

    /// Every family, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Meta)> {
        let mut v: Vec<(&str, &Meta)> = self.map.iter().map(|(k, v)| (&**k, v)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
    }
}
