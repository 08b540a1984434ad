//! Selecting series, chunks and samples for a tenant and a time range.
//!
//! Today every answer comes from the head. The object-store tiers will merge in here, and
//! with them the partial-result warnings this module already carries.

pub mod merge;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::head::{ChunkCopy, Head, Series};
use crate::model::{Labels, Matcher, TenantId};

/// The answer to a query, and anything that makes it less than complete.
#[derive(Debug, Default)]
pub struct Answer<T> {
    /// The data.
    pub data: T,
    /// Why the answer may be partial (empty when it is complete).
    pub warnings: Vec<String>,
}

/// One series and its chunks in a range.
#[derive(Debug)]
pub struct SeriesChunks {
    /// The series.
    pub labels: Labels,
    /// Its chunks overlapping the range, oldest first; they may overhang the range.
    pub chunks: Vec<ChunkCopy>,
}

/// Reads a tenant's data.
#[derive(Debug, Clone)]
pub struct Querier {
    head: Arc<Head>,
}

impl Querier {
    /// A querier over the head.
    pub fn new(head: Arc<Head>) -> Self {
        Self { head }
    }

    /// Series matching all `matchers` with data in `[mint, maxt]`, sorted by labels.
    pub fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<Arc<Series>>> {
        let data = match self.head.tenant(tenant) {
            Some(t) => t.select(matchers, mint, maxt),
            None => Vec::new(),
        };
        Answer {
            data,
            warnings: Vec::new(),
        }
    }

    /// The union of the series each matcher set selects, sorted by labels, deduplicated.
    /// No matcher sets means every series.
    pub fn series(
        &self,
        tenant: &TenantId,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<Labels>> {
        let mut out = BTreeSet::new();
        let mut warnings = Vec::new();
        let all = [Vec::new()];
        let sets = if sets.is_empty() { &all[..] } else { sets };
        for m in sets {
            let a = self.select(tenant, m, mint, maxt);
            warnings.extend(a.warnings);
            out.extend(a.data.iter().map(|s| s.labels().clone()));
        }
        Answer {
            data: out.into_iter().collect(),
            warnings,
        }
    }

    /// Label names of the selected series, sorted.
    pub fn label_names(
        &self,
        tenant: &TenantId,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<String>> {
        let a = self.series(tenant, sets, mint, maxt);
        let names: BTreeSet<&str> = a
            .data
            .iter()
            .flat_map(|l| l.iter().map(|l| &*l.name))
            .collect();
        Answer {
            data: names.into_iter().map(str::to_owned).collect(),
            warnings: a.warnings,
        }
    }

    /// Values of label `name` among the selected series, sorted.
    pub fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<String>> {
        let a = self.series(tenant, sets, mint, maxt);
        let values: BTreeSet<&str> = a.data.iter().filter_map(|l| l.get(name)).collect();
        Answer {
            data: values.into_iter().map(str::to_owned).collect(),
            warnings: a.warnings,
        }
    }

    /// The chunks of one selected series in `[mint, maxt]`.
    pub fn chunks(&self, series: &Series, mint: i64, maxt: i64) -> SeriesChunks {
        SeriesChunks {
            labels: series.labels().clone(),
            chunks: series.chunks(mint, maxt),
        }
    }
}
