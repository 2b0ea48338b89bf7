//! The object store: current objects, one global resourceVersion counter (like etcd's
//! revision), the change history that watches replay and paginated lists rewind, and the open
//! watches' subscriptions. Lives behind one `std::sync::Mutex` in `Shared`; locked briefly by
//! the test's thread (apply/delete/compact) and by the server's runtime thread (list/watch
//! start). Never held across an `.await`.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::kind::Kind;
use crate::object::{object_key, Normalized};

/// One write: the object before and after, at the write's resourceVersion.
#[derive(Debug)]
pub(crate) struct Change {
    /// The resourceVersion this write produced.
    pub(crate) rv: u64,
    pub(crate) kind: Kind,
    /// The object before the write; `None` for a create.
    pub(crate) old: Option<Arc<Value>>,
    /// The object after the write; `None` for a delete.
    pub(crate) new: Option<Arc<Value>>,
}

/// What the store tells an open watch.
#[derive(Debug)]
pub(crate) enum WatchMsg {
    /// A write to an object of the watch's kind.
    Change(Arc<Change>),
    /// Send a BOOKMARK at this resourceVersion (if the client allowed bookmarks).
    Bookmark(u64),
    /// Send an ERROR 410 Expired event, then end the stream cleanly.
    Expire { compacted: u64 },
    /// Close the stream abruptly, without the terminating chunk.
    Drop,
}

/// A resourceVersion a list cannot be served at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RvError {
    /// Older than the retained history (compacted).
    Expired { compacted: u64 },
    /// Newer than anything written so far.
    TooLarge { current: u64 },
}

struct Subscriber {
    id: u64,
    kind: Kind,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

/// Objects of one kind by store key (`ns/name`), in etcd key order.
pub(crate) type Objects = BTreeMap<String, Arc<Value>>;

pub(crate) struct Store {
    /// The last resourceVersion handed out; every write takes the next one.
    rv: u64,
    /// Current state per kind.
    objects: BTreeMap<Kind, Objects>,
    /// Every change with `rv > compacted`, oldest first. Watches replay it; lists rewind it.
    history: Vec<Arc<Change>>,
    /// History before and at this version is gone: watches from older versions get 410.
    compacted: u64,
    /// Open watches, by id.
    subscribers: Vec<Subscriber>,
    next_watch_id: u64,
    /// Random per server so uids differ between runs; a counter makes them unique.
    uid_seed: u64,
    uid_counter: u64,
}

/// The current time as upstream writes timestamps (`2024-05-01T10:00:00Z`).
pub(crate) fn now_timestamp() -> String {
    format!("{:.0}", jiff::Timestamp::now())
}

fn set_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_string(), json!(rv.to_string()));
    }
}

/// A copy of `value` carrying resourceVersion `rv` (DELETED events, selector transitions).
pub(crate) fn with_rv(value: &Value, rv: u64) -> Value {
    let mut v = value.clone();
    set_rv(&mut v, rv);
    v
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            subscribers: Vec::new(),
            next_watch_id: 1,
            uid_seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
            uid_counter: 0,
        }
    }

    /// The last resourceVersion handed out.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// History is complete for every version at or after this one.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        let s = self.uid_seed;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (s >> 32) as u32,
            (s >> 16) as u16,
            s & 0xfff,
            (s >> 12) & 0xfff,
            self.uid_counter
        )
    }

    /// Creates or replaces an object; returns the new resourceVersion.
    pub(crate) fn apply(&mut self, obj: Normalized) -> u64 {
        let key = obj.key();
        let kind = obj.kind;
        let mut value = obj.value;
        let old = self.objects.get(&kind).and_then(|m| m.get(&key)).cloned();
        let (uid, created) = match &old {
            Some(old) => (
                old.pointer("/metadata/uid").cloned(),
                old.pointer("/metadata/creationTimestamp").cloned(),
            ),
            None => (None, None),
        };
        let uid = uid.unwrap_or_else(|| json!(self.next_uid()));
        let created = created.unwrap_or_else(|| json!(now_timestamp()));
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("uid".to_string(), uid);
            meta.insert("creationTimestamp".to_string(), created);
            meta.insert("resourceVersion".to_string(), json!(rv.to_string()));
            meta.remove("deletionTimestamp");
        }
        let new = Arc::new(value);
        self.objects
            .entry(kind)
            .or_default()
            .insert(key, Arc::clone(&new));
        self.record(Change {
            rv,
            kind,
            old,
            new: Some(new),
        });
        rv
    }

    /// Deletes an object; returns the deletion's resourceVersion, or `None` if absent.
    pub(crate) fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        let key = object_key(kind, namespace, name);
        let old = self.objects.get_mut(&kind)?.remove(&key)?;
        self.rv += 1;
        let rv = self.rv;
        self.record(Change {
            rv,
            kind,
            old: Some(old),
            new: None,
        });
        Some(rv)
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push(Arc::clone(&change));
        self.subscribers.retain(|s| {
            s.kind != change.kind || s.tx.send(WatchMsg::Change(Arc::clone(&change))).is_ok()
        });
    }

    /// Forgets all history: versions issued so far become too old to watch from or to
    /// continue a list at. The global version moves on by one (as if an object of a kind not
    /// served here had been written), so a relist gets a version that can be watched.
    pub(crate) fn compact(&mut self) -> u64 {
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
        self.rv
    }

    /// One object's current state.
    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&kind)?
            .get(&object_key(kind, namespace, name))
            .cloned()
    }

    /// All current objects of a kind.
    pub(crate) fn current(&self, kind: Kind) -> Objects {
        self.objects.get(&kind).cloned().unwrap_or_default()
    }

    /// The objects of a kind as they were at `rv`, by rewinding history.
    pub(crate) fn snapshot(&self, kind: Kind, rv: u64) -> Result<Objects, RvError> {
        if rv > self.rv {
            return Err(RvError::TooLarge { current: self.rv });
        }
        if rv < self.compacted {
            return Err(RvError::Expired {
                compacted: self.compacted,
            });
        }
        let mut objects = self.current(kind);
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.kind != kind {
                continue;
            }
            let Some(any) = change.old.as_ref().or(change.new.as_ref()) else {
                continue;
            };
            let key = key_of(kind, any);
            match &change.old {
                Some(old) => objects.insert(key, Arc::clone(old)),
                None => objects.remove(&key),
            };
        }
        Ok(objects)
    }

    /// The changes of a kind after `rv`, or `Expired` if history no longer reaches back.
    pub(crate) fn changes_since(&self, kind: Kind, rv: u64) -> Result<Vec<Arc<Change>>, RvError> {
        if rv < self.compacted {
            return Err(RvError::Expired {
                compacted: self.compacted,
            });
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history[start..]
            .iter()
            .filter(|c| c.kind == kind)
            .cloned()
            .collect())
    }

    /// Registers an open watch of `kind`; it receives every later change of that kind.
    pub(crate) fn subscribe(&mut self, kind: Kind) -> (u64, mpsc::UnboundedReceiver<WatchMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        self.subscribers.push(Subscriber { id, kind, tx });
        (id, rx)
    }

    /// Forgets one watch (its stream ended).
    pub(crate) fn unsubscribe(&mut self, id: u64) {
        self.subscribers.retain(|s| s.id != id);
    }

    /// Sends a message to every open watch; `remove` also forgets them all.
    pub(crate) fn broadcast(&mut self, msg: impl Fn() -> WatchMsg, remove: bool) {
        for s in &self.subscribers {
            let _ = s.tx.send(msg());
        }
        if remove {
            self.subscribers.clear();
        } else {
            self.subscribers.retain(|s| !s.tx.is_closed());
        }
    }

    /// Number of open watches.
    pub(crate) fn watch_count(&self) -> usize {
        self.subscribers
            .iter()
            .filter(|s| !s.tx.is_closed())
            .count()
    }
}

/// The store key of a stored object.
pub(crate) fn key_of(kind: Kind, value: &Value) -> String {
    let s = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default();
    object_key(kind, s("/metadata/namespace"), s("/metadata/name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::normalize;

    fn ep(name: &str, ip: &str) -> Normalized {
        normalize(json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "ns"},
            "subsets": [{"addresses": [{"ip": ip}]}]}))
        .unwrap()
    }

    #[test]
    fn writes_take_increasing_versions_and_keep_uid_and_creation_time() {
        let mut s = Store::new();
        let r1 = s.apply(ep("a", "10.0.0.1"));
        let uid = s.get(Kind::Endpoints, "ns", "a").unwrap()["metadata"]["uid"].clone();
        let r2 = s.apply(ep("a", "10.0.0.2"));
        assert!(r2 > r1);
        let a = s.get(Kind::Endpoints, "ns", "a").unwrap();
        assert_eq!(a["metadata"]["uid"], uid);
        assert_eq!(a["metadata"]["resourceVersion"], r2.to_string());
        assert_eq!(s.delete(Kind::Endpoints, "ns", "a"), Some(r2 + 1));
        assert_eq!(s.delete(Kind::Endpoints, "ns", "a"), None);
    }

    #[test]
    fn snapshots_rewind_history_until_compaction() {
        let mut s = Store::new();
        let r1 = s.apply(ep("a", "10.0.0.1"));
        s.apply(ep("b", "10.0.0.2"));
        s.apply(ep("a", "10.0.0.3"));
        s.delete(Kind::Endpoints, "ns", "b");
        let then = s.snapshot(Kind::Endpoints, r1).unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!(then["ns/a"]["subsets"][0]["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(s.changes_since(Kind::Endpoints, r1).unwrap().len(), 3);
        let c = s.compact();
        assert_eq!(
            s.snapshot(Kind::Endpoints, r1),
            Err(RvError::Expired { compacted: c })
        );
        assert!(s.changes_since(Kind::Endpoints, c).unwrap().is_empty());
        assert_eq!(
            s.snapshot(Kind::Endpoints, c + 1),
            Err(RvError::TooLarge { current: c })
        );
    }
}
