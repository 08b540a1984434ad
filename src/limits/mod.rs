//! Per-tenant limits: the runtime overrides file (`--limits.overrides-file`), in the
//! format of Cortex's and Mimir's runtime config.
//!
//! ```yaml
//! overrides:
//!   tenant-a:
//!     max_series_per_tenant: 500000
//!     retention: 30d
//!     creation_grace_period: 10m
//! ```
//!
//! Every key is optional; a key a tenant does not set falls back to the global flag of the
//! same name (`--limits.max-series-per-tenant` for `max_series_per_tenant`, and
//! `--store.retention` for `retention`). The fallback is always the caller's: [`Overrides`]
//! holds only what the file says, so a flag and the file never disagree about a default.
//!
//! The file is re-read every `--limits.overrides-reload-period` ([`Overrides::run_reloader`]);
//! a file that does not parse keeps the last good overrides in force, is logged, and counts
//! in `weft_overrides_reload_failures_total`. Unknown keys are an error, with their line.
//!
//! **Invariant:** `limits` knows nothing about the head, HTTP or the store: it answers
//! "what does the file say for this tenant", nothing more.

mod duration;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::model::TenantId;

pub use duration::parse_duration;

/// Default for `--limits.max-tenants`.
///
/// An empty tenant costs about 0.8 KiB of memory and 0.2 KiB of `/metrics` text (200k of
/// them took 165 MB of RSS and 40 MB of `/metrics`): 10,000 stay under about 10 MB and a few
/// MB of `/metrics`, which a scraper still takes, while being far above what one ingester
/// serves in practice (Cortex-style deployments run hundreds of tenants per cell).
pub const DEFAULT_MAX_TENANTS: usize = 10_000;

/// Default for `--limits.creation-grace-period`, as in Cortex and Mimir.
pub const DEFAULT_CREATION_GRACE_PERIOD: Duration = Duration::from_secs(10 * 60);

/// Default for `--limits.overrides-reload-period`, as Mimir's `-runtime-config.reload-period`.
pub const DEFAULT_RELOAD_PERIOD: Duration = Duration::from_secs(10);

/// Largest overrides file read, so a mistaken path (a log, a device) cannot take the memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// What the file sets for one tenant. `None`: the global flag applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    /// `--limits.max-series-per-tenant`. Lowering it below a tenant's current count refuses
    /// new series; the existing ones keep taking samples.
    pub max_series_per_tenant: Option<usize>,
    /// `--limits.max-label-names-per-series` (new series only).
    pub max_label_names_per_series: Option<usize>,
    /// `--limits.max-label-name-length` (new series only).
    pub max_label_name_length: Option<usize>,
    /// `--limits.max-label-value-length` (new series only).
    pub max_label_value_length: Option<usize>,
    /// `--limits.max-request-bytes`: a push body, compressed.
    pub max_request_bytes: Option<usize>,
    /// `--limits.max-decompressed-bytes`: a push body after snappy.
    pub max_decompressed_bytes: Option<usize>,
    /// `--limits.max-read-bytes`: bytes one remote read may hold.
    pub max_read_bytes: Option<u64>,
    /// `--limits.max-read-series`: series one remote read may select.
    pub max_read_series: Option<usize>,
    /// `--limits.max-read-samples`: samples in one SAMPLES remote-read answer.
    pub max_read_samples: Option<usize>,
    /// `--limits.creation-grace-period`: how far past now a sample's timestamp may be.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub creation_grace_period: Option<Duration>,
    /// `--store.retention`: objects whose newest sample is older than now − retention are
    /// deleted. `0` keeps the tenant's data for ever.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub retention: Option<Duration>,
    /// `--ingest.out-of-order-window` (Mimir's name): how far before a series' newest
    /// sample a new sample is still accepted. `0` accepts none.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub out_of_order_time_window: Option<Duration>,
    /// `--limits.max-exemplars-per-tenant`: exemplars held; `0` disables them. A change
    /// applies at the tenant's next push with exemplars (the oldest go first).
    pub max_exemplars_per_tenant: Option<usize>,
    /// `--limits.max-metadata-per-tenant`: metric families with metadata held; `0` disables.
    pub max_metadata_per_tenant: Option<usize>,
    /// `--validation.name-validation-scheme` (Mimir's key): `utf8` or `legacy` (new series
    /// only).
    pub name_validation_scheme: Option<crate::model::NameValidationScheme>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    overrides: Option<HashMap<String, TenantOverrides>>,
}

/// Why an overrides file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverridesError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is {len} bytes, more than the {max} an overrides file may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// Not YAML, or not the format: the message names the line (unknown keys included).
    #[error("parsing overrides: {0}")]
    Parse(String),
    /// A tenant id in the file is not a valid `X-Scope-OrgID`.
    #[error("overrides: invalid tenant id {id:?}: {reason}")]
    Tenant {
        /// The id as written.
        id: String,
        /// Why it is invalid.
        reason: crate::model::TenantError,
    },
}

/// The overrides in force, and where they come from.
#[derive(Debug, Default)]
pub struct Overrides {
    path: Option<PathBuf>,
    current: RwLock<Arc<Parsed>>,
}

#[derive(Debug, Default)]
struct Parsed {
    /// The file's bytes, to tell whether a reload changes anything.
    raw: Vec<u8>,
    tenants: HashMap<String, TenantOverrides>,
}

/// Parses an overrides file's text. Never panics, whatever the input (a proptest checks).
pub fn parse(text: &[u8]) -> Result<HashMap<String, TenantOverrides>, OverridesError> {
    let text =
        std::str::from_utf8(text).map_err(|e| OverridesError::Parse(format!("not UTF-8: {e}")))?;
    // An empty file (or one of comments only) sets nothing, as in Mimir.
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    }) {
        return Ok(HashMap::new());
    }
    let file: File = serde_yaml_ng::from_str(text).map_err(|e| parse_error(text, &e))?;
    let tenants = file.overrides.unwrap_or_default();
    for id in tenants.keys() {
        if let Err(reason) = TenantId::parse(id) {
            return Err(OverridesError::Tenant {
                id: id.clone(),
                reason,
            });
        }
    }
    Ok(tenants)
}

impl Overrides {
    /// No overrides: every tenant gets the global flags.
    pub fn none() -> Self {
        Self::default()
    }

    /// Overrides given as text, not reloaded (for tests and tools).
    pub fn from_text(text: &str) -> Result<Self, OverridesError> {
        let tenants = parse(text.as_bytes())?;
        Ok(Self {
            path: None,
            current: RwLock::new(Arc::new(Parsed {
                raw: text.as_bytes().to_vec(),
                tenants,
            })),
        })
    }

    /// Loads `path`; the file must be valid (a node does not start on a bad file, as Mimir
    /// does not). [`Overrides::reload`] re-reads it.
    pub fn load(path: &Path) -> Result<Self, OverridesError> {
        let raw = read_file(path)?;
        let tenants = parse(&raw)?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(Parsed { raw, tenants })),
        })
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What the file sets for `tenant` (all `None` when it names the tenant not at all).
    pub fn tenant(&self, tenant: &TenantId) -> TenantOverrides {
        self.current
            .read()
            .tenants
            .get(tenant.as_str())
            .copied()
            .unwrap_or_default()
    }

    /// Tenants the file names, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut v: Vec<String> = self.current.read().tenants.keys().cloned().collect();
        v.sort();
        v
    }

    /// The store retention of `tenant`: the file's `retention`, else `default`
    /// (`--store.retention`). `None` (and a retention of 0) means keep for ever.
    pub fn retention(&self, tenant: &TenantId, default: Option<Duration>) -> Option<Duration> {
        self.tenant(tenant)
            .retention
            .map_or(default, Some)
            .filter(|d| !d.is_zero())
    }

    /// How far past now `tenant`'s samples may be: the file's `creation_grace_period`,
    /// else `default` (`--limits.creation-grace-period`).
    pub fn creation_grace_period(&self, tenant: &TenantId, default: Duration) -> Duration {
        self.tenant(tenant).creation_grace_period.unwrap_or(default)
    }

    /// Re-reads the file. `Ok(true)` if it changed and the new overrides are in force,
    /// `Ok(false)` if it is unchanged (or there is no file); on an error the previous
    /// overrides stay in force.
    pub fn reload(&self) -> Result<bool, OverridesError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let raw = read_file(path)?;
        if raw == self.current.read().raw {
            return Ok(false);
        }
        let tenants = parse(&raw)?;
        *self.current.write() = Arc::new(Parsed { raw, tenants });
        Ok(true)
    }

    /// Re-reads the file every `period` until the task is dropped. A reload that fails is
    /// logged and counted (`weft_overrides_reload_failures_total`); a successful one (changed
    /// or not) sets `weft_overrides_last_reload_success_timestamp_seconds`.
    pub async fn run_reloader(self: Arc<Self>, period: Duration, metrics: Arc<Metrics>) {
        if self.path.is_none() {
            return;
        }
        metrics.limits.overrides_last_reload_success.set(now_secs());
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the file was just loaded
        loop {
            tick.tick().await;
            let me = self.clone();
            // File I/O off the async workers.
            let r = tokio::task::spawn_blocking(move || me.reload()).await;
            match r {
                Ok(Ok(changed)) => {
                    if changed {
                        tracing::info!(
                            tenants = self.current.read().tenants.len(),
                            "overrides reloaded"
                        );
                    }
                    metrics.limits.overrides_last_reload_success.set(now_secs());
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        "overrides reload failed; the previous overrides stay in force: {e}"
                    );
                    metrics.limits.overrides_reload_failures.inc();
                }
                Err(e) => {
                    tracing::error!("overrides reload task failed: {e}");
                    metrics.limits.overrides_reload_failures.inc();
                }
            }
        }
    }
}

/// The parser's message, with the line of the offending key when the parser did not name
/// one (it does not for an unknown key at the top level).
fn parse_error(text: &str, e: &serde_yaml_ng::Error) -> OverridesError {
    let msg = e.to_string();
    if msg.contains(" line ") {
        return OverridesError::Parse(msg);
    }
    let key = msg
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    let line = key.and_then(|key| {
        text.lines().position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
    });
    match (line, e.location()) {
        (Some(n), _) => OverridesError::Parse(format!("{msg} at line {}", n + 1)),
        (None, Some(l)) => OverridesError::Parse(format!("{msg} at line {}", l.line())),
        (None, None) => OverridesError::Parse(msg),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, OverridesError> {
    use std::io::Read;
    let read_err = |source| OverridesError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut raw = Vec::new();
    // One byte more than allowed tells a file at the limit from one past it.
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    if raw.len() as u64 > MAX_FILE_BYTES {
        return Err(OverridesError::TooLarge {
            path: path.to_path_buf(),
            len: raw.len() as u64,
            max: MAX_FILE_BYTES,
        });
    }
    Ok(raw)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
