//! The object store: JSON objects per group/resource, one cluster-wide
//! resourceVersion counter (like etcd's revision), and an event log that
//! watches replay from a given resourceVersion.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::GroupResource;

/// Events kept for watches resuming from an older resourceVersion.
const LOG_CAPACITY: usize = 20_000;

/// A watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the log and sent to watchers.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub gr: GroupResource,
    pub namespace: String,
    pub kind: EventType,
    /// Shared with the store: a write copies no object.
    pub object: Arc<Value>,
}

/// Objects of one collection: by namespace (or ""), then name. Nested rather than keyed by
/// the pair, so a lookup by `&str`s allocates nothing and compares the namespace once.
type Collection = BTreeMap<String, BTreeMap<String, Arc<Value>>>;

/// Objects, keyed by namespace (or "") and name per group/resource.
pub struct Store {
    rv: u64,
    uid_seq: u64,
    objects: BTreeMap<GroupResource, Collection>,
    /// The resourceVersion of each collection's last change (what the controllers' memos compare).
    changed: BTreeMap<GroupResource, u64>,
    log: VecDeque<Arc<Event>>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Write-through to etcd, when the simulator is etcd-backed.
    persist: Option<super::persist::Persist>,
}

/// Past events to replay, and the receiver for the ones to come.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// The requested resourceVersion is older than the event log.
#[derive(Debug)]
pub struct Gone;

impl Default for Store {
    fn default() -> Self {
        Self {
            rv: 1,
            uid_seq: 0,
            objects: BTreeMap::new(),
            changed: BTreeMap::new(),
            log: VecDeque::new(),
            tx: broadcast::channel(4096).0,
            persist: None,
        }
    }
}

impl Store {
    /// Writes every change from now on through to etcd.
    pub fn set_persist(&mut self, persist: super::persist::Persist) {
        self.persist = Some(persist);
    }

    /// Puts an object loaded from etcd as it is (resourceVersion, uid kept;
    /// no event, no write back).
    pub fn insert_loaded(&mut self, gr: &GroupResource, object: Value) {
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.rv = self.rv.max(rv);
        self.uid_seq += 1;
        self.changed.insert(gr.clone(), self.rv);
        self.objects
            .entry(gr.clone())
            .or_default()
            .entry(ns)
            .or_default()
            .insert(name, Arc::new(object));
    }

    /// Moves the resourceVersion counter up to at least `rv` (etcd's
    /// revision after a load), so versions stay monotonic across restarts.
    pub fn advance_to(&mut self, rv: u64) {
        self.rv = self.rv.max(rv);
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The resourceVersion of the last change to `gr`'s objects (0: none yet).
    pub fn collection_version(&self, gr: &GroupResource) -> u64 {
        self.changed.get(gr).copied().unwrap_or(0)
    }

    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(gr)?.get(ns)?.get(name).map(|o| &**o)
    }

    /// Objects of one collection, all namespaces when `ns` is `None`.
    pub fn list<'a>(&'a self, gr: &GroupResource, ns: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        let collection = self.objects.get(gr);
        let namespaces: Box<dyn Iterator<Item = &BTreeMap<String, Arc<Value>>>> = match ns {
            None => Box::new(collection.into_iter().flat_map(|c| c.values())),
            Some(ns) => Box::new(collection.and_then(|c| c.get(ns)).into_iter()),
        };
        namespaces.flat_map(|m| m.values()).map(|v| &**v)
    }

    /// Stores `object` (its metadata.name/namespace say where), assigning a new
    /// resourceVersion, and uid/creationTimestamp on creation. Returns the stored object
    /// (borrowed: the event log shares it, and a caller that drops it gets no copy).
    pub fn put(&mut self, gr: &GroupResource, mut object: Value) -> &Value {
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let exists = self.get(gr, &ns, &name).is_some();
        self.rv += 1;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = Value::String(self.rv.to_string());
        if !exists {
            self.uid_seq += 1;
            meta["uid"] = Value::String(uid(self.uid_seq));
            meta["creationTimestamp"] = Value::String(now_rfc3339());
        }
        if let Some(p) = &self.persist {
            p.send(self.rv, gr, &ns, &name, Some(&object));
        }
        let kind = if exists { EventType::Modified } else { EventType::Added };
        let object = Arc::new(object);
        self.record(gr, ns.clone(), kind, object.clone());
        let names = self.objects.entry(gr.clone()).or_default().entry(ns).or_default();
        match names.entry(name) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.insert(object);
                e.into_mut()
            }
            std::collections::btree_map::Entry::Vacant(e) => e.insert(object),
        }
    }

    /// Removes an object, returning it.
    pub fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        let namespaces = self.objects.get_mut(gr)?;
        let names = namespaces.get_mut(ns)?;
        let object = names.remove(name)?;
        if names.is_empty() {
            namespaces.remove(ns);
        }
        // The log may share the last version: it is copied only then.
        let mut object = Arc::unwrap_or_clone(object);
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        if let Some(p) = &self.persist {
            p.send(self.rv, gr, ns, name, None);
        }
        self.record(gr, ns.to_owned(), EventType::Deleted, Arc::new(object.clone()));
        Some(object)
    }

    fn record(&mut self, gr: &GroupResource, namespace: String, kind: EventType, object: Arc<Value>) {
        self.changed.insert(gr.clone(), self.rv);
        let event = Arc::new(Event {
            rv: self.rv,
            gr: gr.clone(),
            namespace,
            kind,
            object,
        });
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(event.clone());
        let _ = self.tx.send(event);
    }

    /// Events after `rv` (all matching the collection), plus a receiver for
    /// later ones; subscribing under the store lock leaves no gap.
    pub fn watch_from(&self, gr: &GroupResource, ns: Option<&str>, rv: u64) -> Result<WatchStart, Gone> {
        if let Some(oldest) = self.log.front()
            && rv + 1 < oldest.rv
        {
            return Err(Gone);
        }
        let past = self
            .log
            .iter()
            .filter(|e| e.rv > rv && &e.gr == gr && ns.is_none_or(|ns| ns == e.namespace))
            .cloned()
            .collect();
        Ok((past, self.tx.subscribe()))
    }

    /// The collections that hold objects.
    pub fn resources(&self) -> Vec<GroupResource> {
        self.objects.keys().cloned().collect()
    }

    /// A receiver for events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

fn uid(seq: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (t >> 32) as u32,
        (t >> 16) as u16,
        t & 0xfff,
        (seq >> 48) & 0xfff,
        seq & 0xffff_ffff_ffff
    )
}

/// The current time as RFC 3339 UTC with second precision, as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC with second precision.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant); avoids a date crate for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name}})
    }

    fn names<'a>(it: impl Iterator<Item = &'a Value>) -> Vec<String> {
        it.map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
    }

    /// Lists come ordered by namespace, then name (the order this store has always listed in);
    /// a namespace's last object removed leaves nothing listed there; a write is logged with
    /// the stored object.
    #[test]
    fn lists_are_ordered_by_namespace_then_name_and_removals_leave_nothing_behind() {
        let mut s = Store::default();
        let pods = GroupResource::new("", "pods");
        for (ns, n) in [("b", "y"), ("a", "z"), ("b", "x"), ("a", "a")] {
            s.put(&pods, pod(ns, n));
        }
        assert_eq!(names(s.list(&pods, None)), ["a/a", "a/z", "b/x", "b/y"]);
        assert_eq!(names(s.list(&pods, Some("b"))), ["b/x", "b/y"]);
        assert!(s.list(&pods, Some("c")).next().is_none());
        let (past, _) = s.watch_from(&pods, None, 1).expect("the log holds every write");
        let stored = s.get(&pods, "b", "x").expect("stored");
        assert!(
            past.iter().any(|e| &*e.object == stored),
            "the log holds the stored object"
        );
        let removed = s.remove(&pods, "a", "a").expect("removed");
        assert_eq!(removed["metadata"]["name"], "a");
        assert_eq!(
            s.remove(&pods, "a", "z").map(|o| o["metadata"]["name"].clone()),
            Some(json!("z"))
        );
        assert!(s.get(&pods, "a", "z").is_none());
        assert!(s.list(&pods, Some("a")).next().is_none());
        assert_eq!(names(s.list(&pods, None)), ["b/x", "b/y"]);
        assert!(s.remove(&pods, "a", "z").is_none(), "gone once");
    }
}
