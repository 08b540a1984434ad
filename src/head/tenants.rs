//! Tenant creation policy: at most `--limits.max-tenants` tenants, and no tenant for a push
//! that stores nothing.
//!
//! Before, any client could create tenants without limit: 200k pushes, each with a new
//! valid `X-Scope-OrgID` and a bad label (every one a 400), left 200k empty tenants, RSS
//! 31 → 196 MB and a 40 MB `/metrics`. Now a push creates its tenant only under the cap
//! ([`Head::tenant_for_push`]), and a tenant that the push left empty is removed again at
//! once, with its metric series ([`Head::remove_if_unused`]).
//!
//! **Invariant:** every tenant-labelled metric series belongs to a tenant in the head (or
//! to one being created or removed right now): removing a tenant forgets its series.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Head, HeadError, TenantHead};
use crate::limits::Overrides;
use crate::model::TenantId;

/// A push for a new tenant when the head already holds `--limits.max-tenants` of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant limit reached: this ingester already holds {max} tenants (--limits.max-tenants), \
     so tenant {tenant:?} cannot be created; existing tenants are unaffected"
)]
pub struct TooManyTenants {
    /// The tenant that was refused.
    pub tenant: String,
    /// The cap.
    pub max: usize,
}

impl Head {
    /// Tenants in the head.
    pub fn num_tenants(&self) -> usize {
        self.tenants.read().len()
    }

    /// The tenant's head for a push: the existing one, or a new one while the head holds
    /// fewer than `--limits.max-tenants` tenants. A new tenant must be handed back to
    /// [`Head::remove_if_unused`] if the push stores nothing.
    pub fn tenant_for_push(&self, id: &TenantId) -> Result<Arc<TenantHead>, TooManyTenants> {
        if let Some(t) = self.tenant(id) {
            return Ok(t);
        }
        let mut tenants = self.tenants.write();
        if let Some(t) = tenants.get(id) {
            return Ok(t.clone());
        }
        if tenants.len() >= self.cfg.max_tenants {
            self.metrics.limits.tenants_refused.inc();
            return Err(TooManyTenants {
                tenant: id.to_string(),
                max: self.cfg.max_tenants,
            });
        }
        Ok(self.insert_tenant(&mut tenants, id))
    }

    /// Removes `tenant` from the head if it holds no series and nothing but the head and
    /// the caller holds it (so no other push is appending to it right now), and forgets
    /// its metric series, moving its sample rejections to the tenant-less series. Returns
    /// whether it was removed. For a push that stored nothing.
    pub fn remove_if_unused(&self, tenant: Arc<TenantHead>) -> bool {
        let mut tenants = self.tenants.write();
        // Other pushes take their handle under the read lock of `tenants`, which this
        // write lock excludes: a count of 2 (the map and ours) means no one else has it,
        // and no one can get it before it is gone.
        let unused = tenants
            .get(&tenant.id)
            .is_some_and(|t| Arc::ptr_eq(t, &tenant))
            && Arc::strong_count(&tenant) == 2
            && tenant.num_series() == 0
            // A push of metadata alone keeps its tenant until the idle sweep.
            && !self.exmeta.has_tenant(&tenant.id);
        if !unused {
            return false;
        }
        tenants.remove(&tenant.id);
        self.metrics.limits.tenants.set(tenants.len() as i64);
        drop(tenants);
        self.metrics.fold_tenant_rejections(tenant.id.as_str());
        true
    }

    /// What removing a tenant from the head must also do (for whatever else removes
    /// tenants, e.g. idle ones): set `weft_tenants` and forget the tenant's metric series.
    /// Call it with the write lock of `tenants` released, `left` being the count after.
    pub(super) fn tenant_removed(&self, id: &TenantId, left: usize) {
        self.metrics.limits.tenants.set(left as i64);
        self.metrics.forget_tenant(id.as_str());
    }

    /// The per-tenant overrides (`--limits.overrides-file`), for the limits the head does
    /// not apply itself (request sizes, retention).
    pub fn overrides(&self) -> &Arc<Overrides> {
        &self.cfg.overrides
    }

    /// How far past now `tenant`'s samples may be: its override, else
    /// `--limits.creation-grace-period`.
    pub fn creation_grace_period(&self, tenant: &TenantId) -> Duration {
        self.cfg
            .overrides
            .creation_grace_period(tenant, self.cfg.creation_grace_period)
    }

    /// Creates the tenant's head; the caller holds the write lock and has checked that it
    /// is absent.
    pub(super) fn insert_tenant(
        &self,
        tenants: &mut HashMap<TenantId, Arc<TenantHead>>,
        id: &TenantId,
    ) -> Arc<TenantHead> {
        let t = Arc::new(TenantHead::new(
            id.clone(),
            &self.cfg,
            &self.metrics,
            self.next_ref.clone(),
            self.closed_bytes.clone(),
            self.index_bytes.clone(),
            self.spill.clone(),
        ));
        tenants.insert(id.clone(), t.clone());
        self.metrics.limits.tenants.set(tenants.len() as i64);
        t
    }
}

impl TenantHead {
    /// Counts samples refused before the head saw them (by `ingest`'s checks) in
    /// `weft_samples_rejected_total` under the tenant.
    pub(crate) fn count_refused(&self, e: &HeadError, samples: u64) {
        self.metrics.rejected(e.reason(), samples);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::head::{HeadConfig, HeadError};
    use crate::metrics::{Metrics, SAMPLE_REJECT_REASONS};
    use crate::model::LabelError;
    use crate::proto::{WriteBatch, WriteSeries};

    fn head(max_tenants: usize) -> (Head, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let cfg = HeadConfig {
            max_tenants,
            ..HeadConfig::default()
        };
        (Head::new(cfg, metrics.clone()), metrics)
    }

    fn batch<'a>(labels: &'a [(&'a [u8], &'a [u8])], samples: &[(i64, f64)]) -> WriteBatch<'a> {
        WriteBatch {
            series: vec![WriteSeries {
                labels_start: 0,
                labels_end: labels.len() as u32,
                samples_start: 0,
                samples_end: samples.len() as u32,
                ..WriteSeries::default()
            }],
            labels: labels.to_vec(),
            samples: samples.to_vec(),
            ..WriteBatch::default()
        }
    }

    #[test]
    fn the_cap_refuses_a_new_tenant_and_keeps_serving_existing_ones() {
        let (head, metrics) = head(2);
        let id = |s: &str| TenantId::parse(s).unwrap();
        head.tenant_for_push(&id("a")).unwrap();
        head.tenant_for_push(&id("b")).unwrap();
        let e = head.tenant_for_push(&id("c")).unwrap_err();
        assert_eq!(e.max, 2);
        assert!(e.to_string().contains("--limits.max-tenants"), "{e}");
        assert!(head.tenant_for_push(&id("a")).is_ok());
        assert_eq!(head.num_tenants(), 2);
        assert_eq!(metrics.limits.tenants_refused.get(), 1);
        assert_eq!(metrics.limits.tenants.get(), 2);
    }

    #[test]
    fn a_tenant_whose_push_stored_nothing_is_removed_with_its_metric_series() {
        let (head, metrics) = head(10);
        let id = TenantId::parse("bad-sender").unwrap();
        let t = head.tenant_for_push(&id).unwrap();
        // An invalid label name: the push is refused whole.
        let labels: [(&[u8], &[u8]); 2] = [(b"__name__", b"up"), (b"bad\xffname", b"x")];
        let r = t.append(&batch(&labels, &[(1, 1.0)]), None);
        assert_eq!(r.appended, 0);
        assert!(matches!(
            r.errors[0].error,
            HeadError::Labels(LabelError::InvalidName { .. })
        ));
        assert!(metrics.encode().contains("bad-sender"));
        assert!(head.remove_if_unused(t));
        assert_eq!(head.num_tenants(), 0);
        assert_eq!(metrics.limits.tenants.get(), 0);
        let text = metrics.encode();
        assert!(!text.contains("bad-sender"), "{text}");
        // The refusal is still counted, without a tenant.
        assert!(
            text.contains("weft_samples_rejected_total{tenant=\"\",reason=\"invalid_labels\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_tenant_in_use_or_with_series_is_not_removed() {
        let (head, _) = head(10);
        let id = TenantId::parse("t").unwrap();
        let t = head.tenant_for_push(&id).unwrap();
        let other = head.tenant_for_push(&id).unwrap();
        assert!(!head.remove_if_unused(t), "another push holds it");
        let labels: [(&[u8], &[u8]); 1] = [(b"__name__", b"up")];
        assert_eq!(other.append(&batch(&labels, &[(1, 1.0)]), None).appended, 1);
        assert!(!head.remove_if_unused(other), "it has a series");
        assert_eq!(head.num_tenants(), 1);
    }

    #[test]
    fn every_refusal_reason_is_one_forget_tenant_knows() {
        let errors = [
            HeadError::Labels(LabelError::TooManyLabels { count: 1, limit: 0 }),
            HeadError::SeriesLimit { limit: 1 },
            HeadError::OutOfOrder { t: 0, last: 1 },
            HeadError::DuplicateTimestamp {
                t: 0,
                stored: 0,
                new: 1,
            },
            HeadError::OutOfBounds { t: 0, oldest: 1 },
            HeadError::TooOld {
                t: 0,
                last: 1,
                window_ms: 1,
            },
            HeadError::NativeHistograms { count: 1 },
            HeadError::TooFarInFuture {
                t: 0,
                now: 0,
                grace_ms: 0,
            },
        ];
        for e in errors {
            assert!(
                SAMPLE_REJECT_REASONS.contains(&e.reason()),
                "{}",
                e.reason()
            );
        }
    }
}
