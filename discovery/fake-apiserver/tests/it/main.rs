//! The fake API server's one integration test binary: kube's watcher, the wire protocol, and
//! the installed kubectl against a real server on 127.0.0.1:0. Every wait has a deadline.

mod kubectl;
mod protocol;
mod support;
mod watcher;
