//! strait's control side: everything that decides where traffic may go.
//!
//! - [`spec`]: the checked, runtime-free description of services, routes and upstreams
//!   (the proxy's config loader produces it; registries fill in endpoints later).
//! - [`snapshot`]: the immutable, versioned bundle workers route with ([`Snapshot`]).
//! - [`route`]: the compiled router (host → path prefix → methods → upstream).
//! - [`balance`]: weighted round-robin schedules, computed here so that a worker only
//!   advances a cursor.
//! - [`build`]: the table builder; one changed upstream costs that upstream only.
//! - [`publish`]: one channel per worker plus a wake-up socket the worker awaits.
//!
//! Runs on: the thread that loads config (now) and the discovery thread (Kubernetes, next).
//! Nothing here runs on a worker's request path except the pure lookups in [`route`]
//! and the reads of [`snapshot`] data.

pub mod balance;
pub mod build;
pub mod convert;
pub mod publish;
pub mod route;
pub mod snapshot;
pub mod spec;
pub mod state;

pub use build::{BuildError, TableBuilder};
pub use publish::{Publisher, Subscriber, Update};
pub use snapshot::{Endpoint, EndpointState, Snapshot, SnapshotVersion, Upstream, UpstreamStatus};
pub use spec::Spec;
