//! WATCH (KUBE-API.md §3–5): request validation, the start point (synthetic ADDED for the
//! current state, replay after a version, or an in-stream ERROR 410 for a compacted one),
//! streaming-list mode with the `k8s.io/initial-events-end` bookmark, selector-aware
//! ADDED/MODIFIED/DELETED, bookmarks, `timeoutSeconds`, and abrupt drops. Each watch is one
//! task (the pump) on the server's runtime thread, fed by the store through an unbounded
//! channel and writing newline-delimited JSON into the response body's channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::http::{RespBody, StreamItem};
use crate::kind::Kind;
use crate::list::{in_namespace, parse_rv, parse_selectors};
use crate::render::{self, Format};
use crate::route::Query;
use crate::selector::Selectors;
use crate::server::{lock, Shared};
use crate::status::StatusError;
use crate::store::{with_rv, Change, Objects, RvError, WatchMsg};

/// A validated watch request.
#[derive(Debug)]
pub(crate) struct WatchRequest {
    kind: Kind,
    namespace: Option<String>,
    selectors: Selectors,
    format: Format,
    /// `resourceVersion` as sent (`""`, `"0"` or a number).
    rv: String,
    send_initial_events: Option<bool>,
    bookmarks: bool,
    timeout: Duration,
}

impl WatchRequest {
    pub(crate) fn parse(
        kind: Kind,
        namespace: Option<String>,
        query: &Query,
        format: Format,
        shared: &Shared,
    ) -> Result<WatchRequest, StatusError> {
        let selectors = parse_selectors(query)?;
        let rv = query.get("resourceVersion").unwrap_or("").to_string();
        let rv_match = query.get("resourceVersionMatch").unwrap_or("");
        let send_initial_events = query.flag("sendInitialEvents");
        let bookmarks = query.flag("allowWatchBookmarks") == Some(true);
        if send_initial_events.is_some() {
            if rv_match != "NotOlderThan" {
                return Err(StatusError::invalid_list_options(
                    kind,
                    "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled and resourceVersionMatch is NotOlderThan",
                ));
            }
            if !bookmarks {
                return Err(StatusError::invalid_list_options(
                    kind,
                    "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
                ));
            }
        } else if !rv_match.is_empty() {
            return Err(StatusError::invalid_list_options(
                kind,
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if !rv.is_empty() {
            parse_rv(&rv)?;
        }
        let timeout = match query.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
                StatusError::bad_request(format!("timeoutSeconds: Invalid value: \"{t}\""))
            })?),
            None => shared.default_watch_timeout,
        };
        Ok(WatchRequest {
            kind,
            namespace,
            selectors,
            format,
            rv,
            send_initial_events,
            bookmarks,
            timeout,
        })
    }

    fn selects(&self, obj: &Value) -> bool {
        in_namespace(obj, self.namespace.as_deref()) && self.selectors.matches(obj)
    }

    /// The event a change means to this watch, if any (KUBE-API.md §4: selector transitions).
    fn translate(&self, change: &Change) -> Option<(&'static str, Value)> {
        let old = change.old.as_deref().filter(|o| self.selects(o));
        let new = change.new.as_deref().filter(|n| self.selects(n));
        match (old, new) {
            (Some(_), Some(new)) => Some(("MODIFIED", new.clone())),
            (None, Some(new)) => Some(("ADDED", new.clone())),
            (Some(old), None) => Some(("DELETED", with_rv(old, change.rv))),
            (None, None) => None,
        }
    }
}

/// How a watch begins.
enum Opening {
    /// Synthetic ADDED for `objects`, then (streaming list) the initial-events-end bookmark.
    Initial {
        objects: Objects,
        rv: u64,
        end_bookmark: bool,
    },
    /// Replay of changes after the requested version.
    Replay(Vec<Arc<Change>>),
    /// One ERROR 410 event, then the end of the stream.
    Expired { rv: u64, compacted: u64 },
}

/// Registers the watch and starts its pump; returns the streaming body.
pub(crate) fn start(shared: Arc<Shared>, req: WatchRequest) -> Result<RespBody, StatusError> {
    let initial = match req.send_initial_events {
        Some(send) => send,
        None => req.rv.is_empty() || req.rv == "0",
    };
    let requested = if req.rv.is_empty() {
        0
    } else {
        parse_rv(&req.rv)?
    };
    let (subscription, opening, start_rv) = {
        let mut store = lock(&shared.store);
        if initial {
            let rv = store.rv();
            let objects = store.current(req.kind);
            let sub = store.subscribe(req.kind);
            let end_bookmark = req.send_initial_events == Some(true);
            (
                Some(sub),
                Opening::Initial {
                    objects,
                    rv,
                    end_bookmark,
                },
                rv,
            )
        } else {
            match store.changes_since(req.kind, requested) {
                Ok(changes) => (
                    Some(store.subscribe(req.kind)),
                    Opening::Replay(changes),
                    requested,
                ),
                Err(RvError::Expired { compacted })
                | Err(RvError::TooLarge { current: compacted }) => (
                    None,
                    Opening::Expired {
                        rv: requested,
                        compacted,
                    },
                    requested,
                ),
            }
        }
    };
    let (tx, rx) = mpsc::channel::<StreamItem>(64);
    tokio::spawn(pump(shared, req, subscription, opening, start_rv, tx));
    Ok(RespBody::stream(rx))
}

/// Forgets the subscription when the pump ends, however it ends.
struct Unsubscribe {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        lock(&self.shared.store).unsubscribe(self.id);
    }
}

/// Writes events into the body; a closed receiver (client gone) ends it.
struct Out {
    tx: mpsc::Sender<StreamItem>,
    format: Format,
    kind: Kind,
    /// Tables carry column definitions only on the first event.
    first: bool,
}

impl Out {
    async fn line(&mut self, event: Value) -> Result<(), ()> {
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        self.tx.send(Ok(Bytes::from(line))).await.map_err(drop)
    }

    async fn object(&mut self, type_: &str, obj: &Value) -> Result<(), ()> {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let object = render::object(self.kind, self.format, obj, rv, self.first);
        self.first = false;
        self.line(json!({"type": type_, "object": object})).await
    }

    async fn bookmark(&mut self, rv: u64, initial_events_end: bool) -> Result<(), ()> {
        let object = render::bookmark(self.kind, self.format, rv, initial_events_end);
        self.line(json!({"type": "BOOKMARK", "object": object}))
            .await
    }

    async fn error(&mut self, status: StatusError) -> Result<(), ()> {
        self.line(json!({"type": "ERROR", "object": status.to_json()}))
            .await
    }
}

async fn pump(
    shared: Arc<Shared>,
    req: WatchRequest,
    subscription: Option<(u64, mpsc::UnboundedReceiver<WatchMsg>)>,
    opening: Opening,
    start_rv: u64,
    tx: mpsc::Sender<StreamItem>,
) {
    let deadline = Instant::now() + req.timeout;
    let mut out = Out {
        tx,
        format: req.format,
        kind: req.kind,
        first: true,
    };
    let Some((id, mut rx)) = subscription else {
        if let Opening::Expired { rv, compacted } = opening {
            let _ = out.error(StatusError::watch_expired(rv, compacted)).await;
        }
        return;
    };
    let _unsubscribe = Unsubscribe {
        shared: Arc::clone(&shared),
        id,
    };
    let opened = match opening {
        Opening::Initial {
            objects,
            rv,
            end_bookmark,
        } => {
            let mut r = Ok(());
            for obj in objects.values().filter(|o| req.selects(o)) {
                r = r.and(out.object("ADDED", obj).await);
            }
            if end_bookmark {
                r = r.and(out.bookmark(rv, true).await);
            }
            r
        }
        Opening::Replay(changes) => {
            let mut r = Ok(());
            for change in changes {
                if let Some((type_, obj)) = req.translate(&change) {
                    r = r.and(out.object(type_, &obj).await);
                }
            }
            r
        }
        Opening::Expired { .. } => Err(()),
    };
    if opened.is_err() {
        return;
    }

    let mut last_rv = start_rv;
    let period = shared
        .bookmark_interval
        .unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        let sent = tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                None => return,
                Some(WatchMsg::Change(change)) => {
                    if change.rv <= start_rv {
                        continue;
                    }
                    last_rv = change.rv;
                    match req.translate(&change) {
                        Some((type_, obj)) => out.object(type_, &obj).await,
                        None => Ok(()),
                    }
                }
                Some(WatchMsg::Bookmark(rv)) if req.bookmarks => {
                    last_rv = last_rv.max(rv);
                    out.bookmark(rv, false).await
                }
                Some(WatchMsg::Bookmark(_)) => Ok(()),
                Some(WatchMsg::Expire { compacted }) => {
                    let _ = out.error(StatusError::watch_expired(last_rv, compacted)).await;
                    return;
                }
                Some(WatchMsg::Drop) => {
                    let abort = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "watch dropped by the test");
                    let _ = out.tx.send(Err(abort)).await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = out.tx.closed() => return,
            _ = ticker.tick(), if shared.bookmark_interval.is_some() && req.bookmarks => {
                let rv = lock(&shared.store).rv();
                out.bookmark(rv, false).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
