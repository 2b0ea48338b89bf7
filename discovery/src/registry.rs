//! Registries: where discovered endpoints come from. [`kubernetes`] watches one cluster.
//!
//! Runs on: the discovery thread (tokio). Holds no routing state itself: watchers reduce
//! objects and send [`Msg`]s to the controller, which owns every registry's
//! [`crate::state::RegistryState`].

pub mod kubernetes;

use crate::state::{Kind, Object};

/// Checks a `namespaces` pattern (the config loader calls this).
pub fn check_namespaces(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What a watcher reports, already reduced and filtered by namespace.
#[derive(Debug)]
pub enum WatchEvent {
    /// A (re)list starts.
    Init,
    InitApply(Object),
    /// The (re)list is complete.
    InitDone,
    Apply(Object),
    Delete(Object),
    /// The watch failed; it retries with backoff by itself.
    Error(WatchError),
}

/// A watch failure, classified for logging and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchError {
    /// HTTP status from the API server, when there was one (401, 403, 410…).
    pub code: Option<u16>,
    pub message: String,
}

/// A message from a registry's watcher task to the controller.
#[derive(Debug)]
pub struct Msg {
    pub registry: String,
    /// The registry's incarnation: messages from a replaced registry are dropped.
    pub generation: u64,
    pub kind: Kind,
    pub event: WatchEvent,
}
