//! weft: a Prometheus remote-write ingester that keeps answering through object-store outages.
//!
//! The data path, one module a stage (see `docs/ARCHITECTURE.md`):
//!
//! - [`chunk`]: the Prometheus XOR chunk codec, byte-identical to Prometheus's encoder.
//! - [`model`]: labels (validated, sorted, interned), matchers, tenant ids.
//! - [`proto`]: the remote-write / remote-read protobuf messages, snappy framing, and the
//!   zero-copy remote-write decoder used on the hot path.
//! - [`head`]: the in-memory series of each tenant, their chunks, the postings index, limits.
//! - [`limits`]: per-tenant overrides of the limits (`--limits.overrides-file`).
//! - [`query`]: selecting series and chunks for a time range.
//! - [`flush`]: moving closed chunks from the head into the store.
//! - [`store`]: the object format, object-store backends, deadlines, retry and the circuit
//!   breaker.
//! - [`node`]: the boot sequence that builds every part of a running weft, in order.
//! - [`api`]: HTTP (axum): remote write, remote read, the Prometheus series API, metrics.
//!
//! A chunk round trip, as Prometheus would write it:
//!
//! ```
//! use weft::chunk::{XorAppender, XorIterator};
//!
//! let mut app = XorAppender::new();
//! app.append(1_000, 1.5);
//! app.append(2_000, f64::from_bits(0x7ff0_0000_0000_0002)); // a staleness marker
//! let bytes = app.bytes().to_vec();
//! let samples: Vec<(i64, u64)> = XorIterator::new(&bytes)
//!     .unwrap()
//!     .map(|s| s.map(|(t, v)| (t, v.to_bits())))
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(samples, vec![(1_000, 1.5f64.to_bits()), (2_000, 0x7ff0_0000_0000_0002)]);
//! ```
#![warn(missing_debug_implementations, unreachable_pub)]
#![deny(unused_must_use)]

pub mod api;
pub mod chunk;
pub mod compact;
pub mod exmeta;
pub mod flush;
pub mod head;
pub mod hist;
pub mod ingest;
pub mod limits;
pub mod local;
pub mod metrics;
pub mod model;
pub mod node;
pub mod pressure;
pub mod proto;
pub mod query;
pub mod ring;
pub mod spill;
pub mod store;
pub mod tools;
pub mod wal;
