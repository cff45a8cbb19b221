//! Flux's controllers, simulated from what upstream's install.yaml says about
//! them (read at run time, never typed in here): which CRDs each controller
//! watches, its image and ServiceAccount. A controller acts only while its pod
//! is Ready; its pod runs only when every CRD it watches is Established and a
//! ClusterRoleBinding grants its ServiceAccount a ClusterRole (else the pod
//! crash-loops, as controller-runtime's cache sync fails). source-controller
//! makes sources Ready (an `ssh://` GitRepository needs `identity` and a
//! `known_hosts` entry for its host), kustomize-controller Kustomizations whose
//! source is Ready, helm-controller HelmReleases whose chart is Ready and whose
//! values meet the chart's schema (see [`super::helm`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::path::At;
use serde::Deserialize;
use serde_json::{Value, json};

use super::controllers::{Behaviour, cond, generation, held};
use super::helm;
use super::resources::{GroupResource, crd_established};
use super::store::Store;
use super::workloads::{pod_ready, pods_gr};

/// A CRD of the installation.
#[derive(Clone, Debug)]
pub struct Crd {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub plural: String,
    pub storage_version: String,
}

/// One controller of the installation.
#[derive(Clone, Debug)]
pub struct Controller {
    /// `app.kubernetes.io/component`, e.g. `source-controller`.
    pub component: String,
    /// Image without tag or digest, e.g. `ghcr.io/fluxcd/source-controller`.
    pub image: String,
    /// The CRDs it serves (labelled with its component).
    pub owns: Vec<Crd>,
    /// Every CRD it watches: its own plus the source kinds they reference, each with the
    /// feature gate it is watched behind, if any.
    pub watches: Vec<(Crd, Option<&'static str>)>,
}

/// What install.yaml says about Flux's controllers.
#[derive(Debug)]
pub struct Catalog {
    pub controllers: Vec<Controller>,
}

/// Kinds a controller watches only behind a feature gate, `(component, kind, gate)`.
// Upstream: fluxcd/helm-controller internal/controller/helmrelease_manager.go watches ExternalArtifact only when
// `WatchExternalArtifacts` (the `ExternalArtifact` feature gate) is on.
const GATED: &[(&str, &str, &str)] = &[("helm-controller", "ExternalArtifact", "ExternalArtifact")];

fn image_repo(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The kinds a CRD's own `spec.sourceRef` / `spec.chartRef` may name (their `kind` enums).
// Upstream: fluxcd/kustomize-controller internal/controller/kustomization_manager.go (Watches ExternalArtifact,
// OCIRepository, GitRepository, Bucket = spec.sourceRef's enum) and helm-controller helmrelease_manager.go (Watches
// HelmChart, OCIRepository = spec.chartRef's enum); the chart template's sourceRef is source-controller's (HelmChart).
fn referenced_kinds(crd: &Value) -> Vec<String> {
    let mut out = vec![];
    for v in crd.at("/spec/versions").and_then(Value::as_array).into_iter().flatten() {
        if v["storage"] != true {
            continue;
        }
        let spec = v.at("/schema/openAPIV3Schema/properties/spec/properties");
        for field in ["sourceRef", "chartRef"] {
            if let Some(kinds) = spec
                .and_then(|s| s.at(&format!("/{field}/properties/kind/enum")))
                .and_then(Value::as_array)
            {
                out.extend(kinds.iter().filter_map(|k| k.as_str().map(str::to_owned)));
            }
        }
    }
    out
}

impl Catalog {
    /// Parses an installation manifest (multi-document YAML).
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let mut crds: Vec<(Option<String>, Crd, Vec<String>)> = vec![];
        let mut deployments: Vec<(String, String)> = vec![];
        for doc in yaml_serde::Deserializer::from_str(yaml) {
            let v = Value::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
            let component = v
                .at("/metadata/labels/app.kubernetes.io~1component")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match v["kind"].as_str() {
                Some("CustomResourceDefinition") => {
                    let s = |p: &str| v.at(p).and_then(Value::as_str).unwrap_or_default().to_owned();
                    let storage = v
                        .at("/spec/versions")
                        .and_then(Value::as_array)
                        .and_then(|vs| vs.iter().find(|x| x["storage"] == true))
                        .and_then(|x| x["name"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    crds.push((
                        component,
                        Crd {
                            name: s("/metadata/name"),
                            group: s("/spec/group"),
                            kind: s("/spec/names/kind"),
                            plural: s("/spec/names/plural"),
                            storage_version: storage,
                        },
                        referenced_kinds(&v),
                    ));
                }
                Some("Deployment") => {
                    let Some(component) = component else { continue };
                    let image = v
                        .at("/spec/template/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    deployments.push((component, image_repo(image).to_owned()));
                }
                _ => {}
            }
        }
        let by_kind: HashMap<&str, &Crd> = crds.iter().map(|(_, c, _)| (c.kind.as_str(), c)).collect();
        let controllers = deployments
            .iter()
            .map(|(component, image)| {
                let owns: Vec<Crd> = crds
                    .iter()
                    .filter(|(c, _, _)| c.as_deref() == Some(component))
                    .map(|(_, c, _)| c.clone())
                    .collect();
                let mut names: BTreeSet<String> = owns.iter().map(|c| c.name.clone()).collect();
                let mut watches: Vec<(Crd, Option<&'static str>)> = owns.iter().map(|c| (c.clone(), None)).collect();
                for (_, _, refs) in crds.iter().filter(|(c, _, _)| c.as_deref() == Some(component)) {
                    for kind in refs {
                        let gate = GATED
                            .iter()
                            .find(|(comp, k, _)| comp == component && k == kind)
                            .map(|(_, _, g)| *g);
                        if let Some(crd) = by_kind.get(kind.as_str())
                            && names.insert(crd.name.clone())
                        {
                            watches.push(((*crd).clone(), gate));
                        }
                    }
                }
                Controller {
                    component: component.clone(),
                    image: image.clone(),
                    owns,
                    watches,
                }
            })
            .collect();
        Ok(Self { controllers })
    }

    /// Reads (once per path) the installation manifest at `path`.
    pub fn load(path: &Path) -> Result<Arc<Self>, String> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Catalog>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Mutex::default);
        if let Some(c) = cache.lock().expect("catalog cache").get(path) {
            return Ok(c.clone());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let c = Arc::new(Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        cache.lock().expect("catalog cache").insert(path.to_owned(), c.clone());
        Ok(c)
    }

    /// The controller running `image`, if it is one of Flux's.
    pub fn by_image(&self, image: &str) -> Option<&Controller> {
        let repo = image_repo(image);
        self.controllers.iter().find(|c| c.image == repo)
    }

    /// The controller serving objects of `gr`.
    pub fn owner(&self, gr: &GroupResource) -> Option<&Controller> {
        self.controllers
            .iter()
            .find(|c| c.owns.iter().any(|o| o.group == gr.group && o.plural == gr.resource))
    }
}

/// The default path of upstream's installation: `../shared/flux/v2.9.0/install.yaml` beside the workspace.
pub fn default_install_path() -> PathBuf {
    crate::kube_sim::shared_path("flux/v2.9.0/install.yaml")
}

fn catalog(b: &Behaviour) -> Result<Arc<Catalog>, String> {
    Catalog::load(&b.flux_install)
}

/// Why a Flux controller's pod cannot stay up, or `None` when it is not one or has all it needs.
pub fn crash_reason(store: &Store, b: &Behaviour, pod: &Value) -> Option<String> {
    let image = pod.at("/spec/containers/0/image").and_then(Value::as_str)?;
    if !image.contains("fluxcd/") {
        return None;
    }
    let cat = match catalog(b) {
        Ok(c) => c,
        Err(e) => {
            return Some(format!(
                "kube-sim: the Flux installation to check this controller against: {e}"
            ));
        }
    };
    let ctrl = cat.by_image(image)?;
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let args: Vec<&str> = pod
        .at("/spec/containers/0/args")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let gate_on = |g: &str| {
        args.iter()
            .any(|a| a.starts_with("--feature-gates=") && a.contains(&format!("{g}=true")))
    };
    for (w, gate) in &ctrl.watches {
        if gate.is_some_and(|g| !gate_on(g)) {
            continue;
        }
        if !store.get(&crds, "", &w.name).is_some_and(crd_established) {
            // Upstream: controller-runtime pkg/source Kind.Start / WaitForSync with the RESTMapper's NoKindMatchError.
            return Some(format!(
                "failed to wait for caches to sync: if kind is a CRD, it should be installed before calling Start: no matches for kind \"{}\" in version \"{}/{}\"",
                w.kind, w.group, w.storage_version
            ));
        }
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    if !cluster_role_bound(store, ns, sa) {
        let first = ctrl.owns.first();
        // Upstream: kube-apiserver RBAC denial, as the informer's list reports it.
        return Some(format!(
            "failed to wait for caches to sync: {}.{} is forbidden: User \"system:serviceaccount:{ns}:{sa}\" cannot list resource \"{}\" in API group \"{}\" at the cluster scope",
            first.map(|c| c.plural.as_str()).unwrap_or("*"),
            first.map(|c| c.group.as_str()).unwrap_or("*"),
            first.map(|c| c.plural.as_str()).unwrap_or("*"),
            first.map(|c| c.group.as_str()).unwrap_or("*"),
        ));
    }
    None
}

/// A ClusterRoleBinding names the ServiceAccount and its ClusterRole exists.
// Upstream: RBAC (kubernetes docs "Using RBAC Authorization"): a binding to a missing role grants nothing.
fn cluster_role_bound(store: &Store, ns: &str, sa: &str) -> bool {
    let roles = GroupResource::new("rbac.authorization.k8s.io", "clusterroles");
    store
        .list(
            &GroupResource::new("rbac.authorization.k8s.io", "clusterrolebindings"),
            None,
        )
        .filter(|b| {
            b["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == json!(sa) && s["namespace"] == json!(ns))
        })
        .any(|b| {
            b.at("/roleRef/name")
                .and_then(Value::as_str)
                .is_some_and(|r| store.get(&roles, "", r).is_some())
        })
}

/// Components whose pod is Ready.
fn running(store: &Store, cat: &Catalog) -> BTreeSet<String> {
    store
        .list(&pods_gr(), None)
        .filter(|p| pod_ready(p))
        .filter_map(|p| p.at("/spec/containers/0/image").and_then(Value::as_str))
        .filter_map(|i| cat.by_image(i).map(|c| c.component.clone()))
        .collect()
}

pub fn ready_of(o: &Value) -> Option<bool> {
    o.at("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"] == "True" && o.at("/status/observedGeneration") == o.at("/metadata/generation"))
}

/// The group/resource of a Flux source kind.
pub fn source_gr(kind: &str) -> Option<GroupResource> {
    let plural = match kind {
        "GitRepository" => "gitrepositories",
        "OCIRepository" => "ocirepositories",
        "Bucket" => "buckets",
        "HelmRepository" => "helmrepositories",
        "HelmChart" => "helmcharts",
        "ExternalArtifact" => "externalartifacts",
        _ => return None,
    };
    Some(GroupResource::new("source.toolkit.fluxcd.io", plural))
}

/// `(status, reason, message)` of an object's Ready condition.
pub type Verdict = (&'static str, &'static str, String);

/// Host (and port, when not 22) of an `ssh://` URL.
fn ssh_host(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.strip_prefix("ssh://")?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => Some((
            h.trim_matches(['[', ']']).to_owned(),
            p.parse().ok().filter(|p| *p != 22),
        )),
        _ => Some((hostport.trim_matches(['[', ']']).to_owned(), None)),
    }
}

/// Whether an OpenSSH known_hosts text has a (plain) entry for the host.
// Upstream: OpenSSH sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT": comma-separated patterns, `[host]:port` for
// non-default ports, `*`/`?` wildcards, `!` negation; `|1|` hashed names are not matched here.
fn known_host(known_hosts: &str, host: &str, port: Option<u16>) -> bool {
    let name = match port {
        Some(p) => format!("[{host}]:{p}"),
        None => host.to_owned(),
    };
    known_hosts.lines().any(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return false;
        }
        let mut fields = line.split_whitespace();
        let mut hosts = fields.next().unwrap_or_default();
        if hosts.starts_with('@') {
            if hosts == "@revoked" {
                return false;
            }
            hosts = fields.next().unwrap_or_default();
        }
        let has_key = fields.next().is_some() && fields.next().is_some();
        let patterns: Vec<&str> = hosts.split(',').collect();
        has_key
            && !patterns
                .iter()
                .any(|p| p.strip_prefix('!').is_some_and(|p| glob(p, &name)))
            && patterns.iter().any(|p| !p.starts_with('!') && glob(p, &name))
    })
}

fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

fn secret_data(store: &Store, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    use base64::Engine;
    let s = store.get(&GroupResource::new("", "secrets"), ns, name)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Some(
        s["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let bytes = b64.decode(v.as_str()?).ok()?;
                Some((k.clone(), String::from_utf8_lossy(&bytes).into_owned()))
            })
            .collect(),
    )
}

/// Upstream: fluxcd/source-controller docs/spec/v1/gitrepositories.md "SSH authentication" (the Secret holds
/// `identity`, `identity.pub`, `known_hosts`) and fluxcd/pkg git/options.go `AuthOptions.Validate` messages.
fn git_repository(store: &Store, o: &Value) -> Verdict {
    let url = o.at("/spec/url").and_then(Value::as_str).unwrap_or_default();
    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
    let Some((host, port)) = ssh_host(url) else {
        return fetched(url);
    };
    let auth = "failed to configure authentication options";
    let data = match o.at("/spec/secretRef/name").and_then(Value::as_str) {
        None => BTreeMap::new(),
        Some(name) => match secret_data(store, ns, name) {
            Some(d) => d,
            None => {
                return (
                    "False",
                    "AuthenticationFailed",
                    format!("failed to get secret '{ns}/{name}': secrets \"{name}\" not found"),
                );
            }
        },
    };
    if data.get("identity").is_none_or(String::is_empty) {
        return (
            "False",
            "AuthenticationFailed",
            format!("{auth}: invalid 'ssh' auth option: 'identity' is required"),
        );
    }
    let Some(kh) = data.get("known_hosts").filter(|k| !k.trim().is_empty()) else {
        return (
            "False",
            "AuthenticationFailed",
            format!("{auth}: invalid 'ssh' auth option: 'known_hosts' is required"),
        );
    };
    if !known_host(kh, &host, port) {
        return (
            "False",
            "GitOperationFailed",
            format!(
                "failed to checkout and determine revision: unable to clone '{url}': ssh: handshake failed: knownhosts: key is unknown"
            ),
        );
    }
    fetched(url)
}

fn fetched(_url: &str) -> Verdict {
    (
        "True",
        "Succeeded",
        "stored artifact for revision 'main@sha1:0000000000000000000000000000000000000000'".into(),
    )
}

/// A Kustomization's or HelmChart's source: Ready, or why not.
fn source_ready(store: &Store, o: &Value, kind_default: &str) -> Result<(), String> {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
    let r = &o["spec"]["sourceRef"];
    let kind = r["kind"].as_str().unwrap_or(kind_default);
    let name = r["name"].as_str().unwrap_or_default();
    let src_ns = r["namespace"].as_str().unwrap_or(ns);
    let src = source_gr(kind).and_then(|gr| store.get(&gr, src_ns, name));
    match src.and_then(ready_of) {
        Some(true) => Ok(()),
        Some(false) | None if src.is_some() => Err(format!("{kind} '{src_ns}/{name}' is not ready")),
        _ => Err(format!("{kind} '{src_ns}/{name}' not found")),
    }
}

/// One pass of Flux's controllers over their objects; `delay_due` says whether an object's ready delay is over.
pub fn reconcile(store: &mut Store, b: &Behaviour, delay_due: &mut dyn FnMut(&GroupResource, &Value) -> bool) {
    let Ok(cat) = catalog(b) else { return };
    let up = running(store, &cat);
    let releases = if up.contains("helm-controller") {
        helm::reconcile_releases(store, b)
    } else {
        HashMap::new()
    };
    let mut writes: Vec<(GroupResource, Value)> = vec![];
    for gr in store.resources() {
        if !gr.group.ends_with(".toolkit.fluxcd.io") {
            continue;
        }
        // Objects of a controller that is not running get no status (nobody writes it).
        let Some(ctrl) = cat.owner(&gr) else { continue };
        if !up.contains(&ctrl.component) {
            continue;
        }
        for o in store.list(&gr, None) {
            let verdict: Verdict = match o["kind"].as_str().unwrap_or_default() {
                "GitRepository" => git_repository(store, o),
                "HelmChart" => match source_ready(store, o, "HelmRepository") {
                    Ok(()) => ("True", "Succeeded", "packaged chart with version from source".into()),
                    Err(e) => ("False", "SourceUnavailable", e),
                },
                "Kustomization" => match (source_ready(store, o, "GitRepository"), decryption(store, o)) {
                    (Err(_), _) => (
                        // Upstream: kustomize-controller kustomization_controller.go "Source artifact not found".
                        "False",
                        "ArtifactFailed",
                        "Source artifact not found, retrying in 30s".into(),
                    ),
                    (Ok(()), Err(e)) => ("False", "DecryptionFailed", e),
                    (Ok(()), Ok(())) => (
                        "True",
                        "ReconciliationSucceeded",
                        "Applied revision: main@sha1:0000000".into(),
                    ),
                },
                "HelmRelease" => releases
                    .get(&(
                        o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                        o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                    ))
                    .cloned()
                    .unwrap_or(("Unknown", "Progressing", "reconciliation in progress".into())),
                _ => ("True", "Succeeded", "reconciliation succeeded".into()),
            };
            let g = generation(o);
            let mut verdict = verdict;
            if verdict.0 == "True" && (held(o) || !delay_due(&gr, o)) {
                verdict = ("Unknown", "Progressing", "reconciliation in progress".into());
            }
            let mut status = if o["status"].is_object() {
                o["status"].clone()
            } else {
                json!({})
            };
            status["observedGeneration"] = json!(g);
            status["conditions"] = json!([cond("Ready", verdict.0, verdict.1, &verdict.2)]);
            if super::controllers::differs(&o["status"], &status) {
                let mut n = o.clone();
                n["status"] = status;
                writes.push((gr.clone(), n));
            }
        }
    }
    for (gr, o) in writes {
        store.put(&gr, o);
    }
}

/// Upstream: kustomize-controller decrypts with the Secret `spec.decryption.secretRef` names; a missing one fails.
fn decryption(store: &Store, o: &Value) -> Result<(), String> {
    let Some(name) = o.at("/spec/decryption/secretRef/name").and_then(Value::as_str) else {
        return Ok(());
    };
    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
    match store.get(&GroupResource::new("", "secrets"), ns, name) {
        Some(_) => Ok(()),
        None => Err(format!(
            "cannot get decryption Secret '{ns}/{name}': secrets \"{name}\" not found"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Arc<Catalog> {
        Catalog::load(&default_install_path()).expect("../shared/flux/v2.9.0/install.yaml")
    }

    #[test]
    fn watches_come_from_the_install_manifest() {
        let cat = upstream();
        let names = |c: &str| -> Vec<String> {
            let mut v: Vec<String> = cat
                .controllers
                .iter()
                .find(|x| x.component == c)
                .unwrap_or_else(|| panic!("{c} missing"))
                .watches
                .iter()
                .filter(|(_, gate)| gate.is_none())
                .map(|(w, _)| w.kind.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names("source-controller"),
            [
                "Bucket",
                "ExternalArtifact",
                "GitRepository",
                "HelmChart",
                "HelmRepository",
                "OCIRepository"
            ]
        );
        assert_eq!(
            names("kustomize-controller"),
            [
                "Bucket",
                "ExternalArtifact",
                "GitRepository",
                "Kustomization",
                "OCIRepository"
            ]
        );
        assert_eq!(names("helm-controller"), ["HelmChart", "HelmRelease", "OCIRepository"]);
        assert_eq!(names("notification-controller"), ["Alert", "Provider", "Receiver"]);
        assert_eq!(
            cat.by_image("ghcr.io/fluxcd/source-controller:v1.9.0")
                .map(|c| c.component.as_str()),
            Some("source-controller")
        );
    }

    #[test]
    fn known_hosts_entries_match_host_and_port() {
        let kh = "github.com ssh-ed25519 AAAAC3Nza\n[git.example]:2222,10.0.0.1 ssh-rsa AAAAB3\n";
        assert!(known_host(kh, "github.com", None));
        assert!(known_host(kh, "git.example", Some(2222)));
        assert!(!known_host(kh, "git.example", None));
        assert!(!known_host(kh, "gitlab.com", None));
        assert!(known_host("*.corp ssh-ed25519 AAAA", "git.corp", None));
        assert_eq!(
            ssh_host("ssh://git@github.com/org/repo.git"),
            Some(("github.com".into(), None))
        );
        assert_eq!(ssh_host("ssh://git@host:2222/r"), Some(("host".into(), Some(2222))));
        assert_eq!(ssh_host("https://github.com/org/repo"), None);
    }
}
