//! Server-side apply of multi-document YAML: kinds resolved through discovery
//! (so custom resources work once their CRD is Established), field manager
//! `bootstrap` with force, Namespaces first, then CRDs (waited for), then the
//! rest. In plan mode (`dry_run`) every write is a `dryRun=All` apply and the
//! answer is compared with the live object, so nothing changes on the cluster.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersion, GroupVersionKind};
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use serde::Deserialize;
use serde_json::Value;

use super::redact::Redactor;
use super::{Client, Error, diff, wait};

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOpts {
    /// Plan only: server-side dry-run, nothing is written.
    pub dry_run: bool,
    /// Server-side apply field manager.
    pub field_manager: String,
    /// How long CRDs applied in the same batch may take to become Established.
    pub crd_timeout: Duration,
    /// Namespace for namespaced objects that name none.
    pub default_namespace: String,
    /// Objects applied at once (within one stage).
    pub concurrency: usize,
}

impl Default for ApplyOpts {
    fn default() -> Self {
        Self {
            dry_run: false,
            field_manager: "bootstrap".into(),
            crd_timeout: Duration::from_secs(60),
            default_namespace: "default".into(),
            concurrency: 4,
        }
    }
}

/// What an apply did (or, in plan mode, would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Unchanged,
}

/// One object's outcome. Carries field paths, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// Changed fields of an update (`spec.replicas`, `data.password`).
    pub fields: Vec<String>,
}

impl Change {
    /// `Kind namespace/name` or `Kind name`.
    pub fn object_ref(&self) -> String {
        object_ref(&self.kind, self.namespace.as_deref(), &self.name)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
        };
        write!(f, "{verb} {}", self.object_ref())?;
        if !self.fields.is_empty() {
            write!(f, " ({})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

fn object_ref(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// One parsed manifest.
struct Manifest {
    obj: Value,
    gvk: GroupVersionKind,
    name: String,
}

impl Manifest {
    fn namespace(&self) -> Option<&str> {
        self.obj.pointer("/metadata/namespace").and_then(Value::as_str)
    }

    fn describe(&self) -> String {
        object_ref(&self.gvk.kind, self.namespace(), &self.name)
    }
}

/// Splits multi-document YAML into objects (JSON), flattening `kind: List`.
/// Each must have apiVersion, kind and metadata.name.
pub fn parse_manifests(yaml: &str) -> Result<Vec<Value>, Error> {
    let mut out = vec![];
    for (i, doc) in yaml_serde::Deserializer::from_str(yaml).enumerate() {
        let index = i + 1;
        let bad = |message: String| Error::Manifest { index, message };
        let v = yaml_serde::Value::deserialize(doc).map_err(|e| bad(format!("not valid YAML: {e}")))?;
        if v.is_null() {
            continue;
        }
        let v: Value = serde_json::to_value(&v).map_err(|e| bad(format!("not representable as JSON: {e}")))?;
        let items = match (v["kind"].as_str(), v["items"].as_array()) {
            (Some(k), Some(items)) if k.ends_with("List") => items.clone(),
            _ => vec![v],
        };
        for o in items {
            if !o.is_object() {
                return Err(bad("not a mapping".into()));
            }
            for (field, ptr) in [
                ("apiVersion", "/apiVersion"),
                ("kind", "/kind"),
                ("metadata.name", "/metadata/name"),
            ] {
                if o.pointer(ptr).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(bad(format!("missing {field}")));
                }
            }
            out.push(o);
        }
    }
    Ok(out)
}

fn to_manifest(index: usize, obj: Value) -> Result<Manifest, Error> {
    let bad = |message: String| Error::Manifest { index, message };
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let gv: GroupVersion = api_version
        .parse()
        .map_err(|_| bad(format!("apiVersion {api_version:?} is not group/version")))?;
    let kind = obj["kind"].as_str().unwrap_or_default();
    Ok(Manifest {
        gvk: GroupVersionKind::gvk(&gv.group, &gv.version, kind),
        name: obj["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        obj,
    })
}

fn stage(m: &Manifest) -> u8 {
    match (m.gvk.group.as_str(), m.gvk.kind.as_str()) {
        ("", "Namespace") => 0,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
        _ => 2,
    }
}

/// Applies every object in `yaml` (server-side apply, force) and returns what
/// was created or changed; in plan mode (`opts.dry_run`) what would be.
/// Unchanged objects are left out, so a converged cluster yields none.
pub async fn apply_manifests(client: &Client, yaml: &str, opts: &ApplyOpts) -> Result<Vec<Change>, Error> {
    let objects = parse_manifests(yaml)?;
    let mut redactor = Redactor::default();
    for o in &objects {
        redactor.learn_object(o);
    }
    let manifests = objects
        .into_iter()
        .enumerate()
        .map(|(i, o)| to_manifest(i + 1, o))
        .collect::<Result<Vec<_>, _>>()?;
    let batch_namespaces: HashSet<String> = manifests
        .iter()
        .filter(|m| stage(m) == 0)
        .map(|m| m.name.clone())
        .collect();
    let batch_crd_kinds: HashSet<(String, String)> = manifests
        .iter()
        .filter(|m| stage(m) == 1)
        .filter_map(|m| {
            Some((
                m.obj.pointer("/spec/group")?.as_str()?.to_owned(),
                m.obj.pointer("/spec/names/kind")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    let ctx = Ctx {
        client,
        opts,
        redactor,
        batch_namespaces,
    };
    let mut kinds: HashMap<GroupVersionKind, Option<(ApiResource, ApiCapabilities)>> = HashMap::new();
    let mut changes = vec![];
    for s in 0..=2u8 {
        let todo: Vec<&Manifest> = manifests.iter().filter(|m| stage(m) == s).collect();
        let mut planned = vec![];
        for m in todo {
            if !kinds.contains_key(&m.gvk) {
                let found = ctx.resolve(&m.gvk, m).await?;
                kinds.insert(m.gvk.clone(), found);
            }
            match kinds.get(&m.gvk).cloned().flatten() {
                Some(found) => planned.push((m, found)),
                None if opts.dry_run && batch_crd_kinds.contains(&(m.gvk.group.clone(), m.gvk.kind.clone())) => {
                    // Its CRD is part of this plan: the kind will exist once applied.
                    changes.push(Change {
                        action: Action::Create,
                        api_version: m.gvk.api_version(),
                        kind: m.gvk.kind.clone(),
                        namespace: m.namespace().map(str::to_owned),
                        name: m.name.clone(),
                        fields: vec![],
                    });
                }
                None => {
                    return Err(Error::UnknownKind {
                        server: client.server().to_owned(),
                        object: m.describe(),
                        api_version: m.gvk.api_version(),
                        kind: m.gvk.kind.clone(),
                    });
                }
            }
        }
        // Futures collected first: a closure held across the await makes the
        // caller's future not provably Send (rustc #102211).
        let applies: Vec<_> = planned
            .into_iter()
            .map(|(m, (ar, caps))| ctx.apply_one(m, ar, caps))
            .collect();
        let done: Vec<Change> = futures::stream::iter(applies)
            .buffered(opts.concurrency.max(1))
            .try_collect()
            .await?;
        changes.extend(done.into_iter().filter(|c| c.action != Action::Unchanged));
        if s == 1 && !opts.dry_run {
            for m in manifests.iter().filter(|m| stage(m) == 1) {
                wait::crd_established(client, &m.name, opts.crd_timeout).await?;
            }
            // Kinds looked up before their CRD existed must be looked up again.
            kinds.retain(|_, v| v.is_some());
        }
    }
    Ok(changes)
}

struct Ctx<'a> {
    client: &'a Client,
    opts: &'a ApplyOpts,
    redactor: Redactor,
    batch_namespaces: HashSet<String>,
}

impl Ctx<'_> {
    fn error(&self, step: &'static str, object: &str, e: &kube::Error) -> Error {
        match self.client.api_error(step, object, e) {
            Error::Api {
                server,
                step,
                object,
                message,
                code,
            } => Error::Api {
                server,
                step,
                object,
                message: self.redactor.scrub(&message),
                code,
            },
            other => other,
        }
    }

    /// The served resource for a kind, `None` when the server does not serve it.
    async fn resolve(
        &self,
        gvk: &GroupVersionKind,
        m: &Manifest,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, Error> {
        let what = format!("discover {}", gvk.api_version());
        let r = self
            .client
            .retry()
            .run(&what, || discovery::pinned_kind(self.client.kube(), gvk))
            .await;
        match r {
            Ok(found) => Ok(Some(found)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(self.error("discover the kind of", &m.describe(), &e)),
        }
    }

    async fn apply_one(&self, m: &Manifest, ar: ApiResource, caps: ApiCapabilities) -> Result<Change, Error> {
        let kube = self.client.kube().clone();
        let mut body = m.obj.clone();
        let ns = match caps.scope {
            Scope::Namespaced => {
                let ns = m.namespace().unwrap_or(&self.opts.default_namespace).to_owned();
                body["metadata"]["namespace"] = Value::String(ns.clone());
                Some(ns)
            }
            Scope::Cluster => {
                if let Some(meta) = body["metadata"].as_object_mut() {
                    meta.remove("namespace");
                }
                None
            }
        };
        if let Some(meta) = body["metadata"].as_object_mut() {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
                "generation",
                "selfLink",
            ] {
                meta.remove(k);
            }
        }
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(kube, ns, &ar),
            None => Api::all_with(kube, &ar),
        };
        let what = object_ref(&m.gvk.kind, ns.as_deref(), &m.name);
        let retry = self.client.retry();
        let live = retry
            .run(&format!("get {what}"), || api.get_opt(&m.name))
            .await
            .map_err(|e| self.error("get", &what, &e))?;
        let mut params = PatchParams::apply(&self.opts.field_manager).force();
        if self.opts.dry_run {
            params = params.dry_run();
        }
        let step = if self.opts.dry_run { "dry-run apply" } else { "apply" };
        let patch = Patch::Apply(&body);
        let change = |action, fields| Change {
            action,
            api_version: m.gvk.api_version(),
            kind: m.gvk.kind.clone(),
            namespace: ns.clone(),
            name: m.name.clone(),
            fields,
        };
        let result = match retry
            .run(&format!("{step} {what}"), || api.patch(&m.name, &params, &patch))
            .await
        {
            Ok(r) => r,
            // Plan mode: the namespace is itself part of the plan, so this is a creation.
            Err(kube::Error::Api(s))
                if self.opts.dry_run
                    && s.code == 404
                    && ns.as_ref().is_some_and(|n| self.batch_namespaces.contains(n)) =>
            {
                return Ok(change(Action::Create, vec![]));
            }
            Err(e) => return Err(self.error(step, &what, &e)),
        };
        let (action, fields) = match live {
            None => (Action::Create, vec![]),
            Some(live) => {
                let before = serde_json::to_value(&live).unwrap_or_default();
                let after = serde_json::to_value(&result).unwrap_or_default();
                let fields = diff::changed_fields(&before, &after);
                if fields.is_empty() {
                    (Action::Unchanged, fields)
                } else {
                    (Action::Update, fields)
                }
            }
        };
        let c = change(action, fields);
        match action {
            Action::Unchanged => tracing::debug!(server = self.client.server(), "{c}"),
            _ if self.opts.dry_run => tracing::info!(server = self.client.server(), "plan: {c}"),
            _ => tracing::info!(server = self.client.server(), "{c}"),
        }
        Ok(c)
    }
}
