//! The ring: weft nodes sharing the work, each series held by `--ring.replication-factor`
//! of them, membership kept in etcd.
//!
//! - [`desc`]: what one instance publishes in etcd (id, address, zone, state, tokens).
//! - [`hash`]: the series token (tenant and labels hashed onto the ring).
//! - [`replicas`]: [`Ring`], a snapshot of the ring, and the replica set of a token.
//! - [`tokens`]: picking an instance's tokens, and keeping them across restarts.
//! - [`membership`]: registration under an etcd lease, keepalive, the watch.
//! - [`forward`]: a push split by owner, sent to them, acknowledged on a durable quorum.
//! - [`fanout`]: reads asked of every node that may hold the series, merged without repeats.
//! - [`page`]: `/ring` as HTML and JSON.
//!
//! Without `--ring.etcd-endpoints` none of this runs and a node works alone.

pub mod cluster;
pub mod desc;
pub mod fanout;
pub mod forward;
pub mod hash;
pub mod membership;
pub mod page;
pub mod replicas;
pub mod tokens;

pub use cluster::{Cluster, ClusterConfig};
pub use desc::{InstanceDesc, InstanceState};
pub use replicas::Ring;

/// The header a forwarded push or a peer read carries: the receiver applies the push (or
/// answers from what it holds itself) and never forwards or fans out again.
pub const PEER_HEADER: &str = "x-weft-peer";

/// Errors of the ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// etcd could not be reached or refused a call.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A value under the ring prefix could not be read.
    #[error("ring entry {key}: {reason}")]
    BadEntry {
        /// The etcd key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokens file could not be read or written.
    #[error("tokens file {path}: {reason}")]
    TokensFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Another live instance already registered this id.
    #[error("instance id {0:?} is already registered by a live node")]
    DuplicateId(String),
}
