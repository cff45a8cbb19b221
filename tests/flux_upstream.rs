//! Flux as upstream installs it: the objects phases 0-2 apply for Flux are the
//! objects of the pinned release manifest (`../shared/flux/v2.9.0/install.yaml`,
//! read here independently of the product's embedded copy) plus exactly the
//! patches `src/phases/flux_patches.rs` lists, and the embedded data is the
//! pinned file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bootstrap::inventory::Cluster;
use bootstrap::phases::flux_patches::{PATCHES, Patch};
use bootstrap::phases::{catalog, export, flux};
use serde_json::Value;
use sha2::Digest;

fn shared(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|d| d.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()))
}

fn upstream_text() -> String {
    std::fs::read_to_string(shared("flux/v2.9.0/install.yaml")).unwrap()
}

fn cluster(inventory: &str) -> Cluster {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory").join(inventory);
    bootstrap::inventory::load(&path).unwrap().inventory.clusters.remove(0)
}

fn key(o: &Value) -> (String, String, String, String) {
    let s = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// Every object of the exported manifests, with the phase file it is in.
fn applied(c: &Cluster) -> Vec<(String, Value)> {
    let mut out = vec![];
    for (path, text) in export::manifests(c).unwrap() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for o in bootstrap::k8s::parse_manifests(&text).unwrap() {
            out.push((file.clone(), o));
        }
    }
    out
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of the leaves where `a` and `b` differ.
fn diff(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{at}/{}", escape(k));
                diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{at}/{i}");
                diff(
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

const ARGS: &str = "/spec/template/spec/containers/0/args";
const ENV: &str = "/spec/template/spec/containers/0/env";

fn flag_of(arg: &Value) -> String {
    let s = arg.as_str().unwrap_or_default();
    s.split('=').next().unwrap_or(s).to_owned()
}

/// The patches that apply to upstream object `u`.
fn patches_for(u: &Value) -> Vec<&'static Patch> {
    PATCHES
        .iter()
        .filter(|p| p.applies_to(u))
        .filter(|p| p.kind != "Deployment" || flux_patches_controllers().contains(&key(u).3.as_str()))
        .collect()
}

fn flux_patches_controllers() -> [&'static str; 4] {
    bootstrap::phases::flux_patches::CONTROLLERS
}

/// Asserts `p` (product) is `u` (upstream) plus only the listed patches;
/// returns the names of the patches that changed something.
fn assert_only_listed_patches(u: &Value, p: &Value) -> BTreeSet<&'static str> {
    let what = format!("{:?}", key(u));
    let patches = patches_for(u);
    let mut used = BTreeSet::new();
    let mut changed = vec![];
    diff(u, p, "", &mut changed);
    for ptr in changed.iter().filter(|c| !c.starts_with(ARGS) && !c.starts_with(ENV)) {
        let by = patches
            .iter()
            .find(|pt| pt.fields.iter().any(|f| ptr == f || ptr.starts_with(&format!("{f}/"))));
        let by = by.unwrap_or_else(|| panic!("{what}: {ptr} differs from upstream and no listed patch sets it"));
        used.insert(by.name);
    }
    // Args: upstream's, in order, except the flags patches set; each patched flag once.
    let flags: BTreeSet<&str> = patches.iter().flat_map(|pt| pt.flags.iter().copied()).collect();
    let args = |o: &Value| o.pointer(ARGS).and_then(Value::as_array).cloned().unwrap_or_default();
    let keep = |a: &Vec<Value>| -> Vec<Value> {
        a.iter()
            .filter(|x| !flags.contains(flag_of(x).as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(
        keep(&args(u)),
        keep(&args(p)),
        "{what}: args beyond the patched flags changed"
    );
    for pt in &patches {
        for f in pt.flags {
            let before: Option<Value> = args(u).into_iter().find(|a| flag_of(a) == *f);
            let after: Vec<Value> = args(p).into_iter().filter(|a| flag_of(a) == *f).collect();
            assert!(after.len() <= 1, "{what}: {f} given {} times", after.len());
            if before.as_ref() != after.first() {
                used.insert(pt.name);
            }
        }
    }
    // Env: upstream's, in order, except the variables patches set.
    let names: BTreeSet<&str> = patches.iter().flat_map(|pt| pt.env.iter().copied()).collect();
    let env = |o: &Value| -> Vec<Value> {
        o.pointer(ENV)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !names.contains(e["name"].as_str().unwrap_or_default()))
            .collect()
    };
    assert_eq!(env(u), env(p), "{what}: env beyond the patched variables changed");
    for pt in &patches {
        if pt.env.iter().any(|n| {
            let get = |o: &Value| {
                o.pointer(ENV)
                    .and_then(Value::as_array)
                    .and_then(|l| l.iter().find(|e| e["name"] == *n).cloned())
            };
            get(u) != get(p)
        }) {
            used.insert(pt.name);
        }
    }
    used
}

fn check_cluster(c: &Cluster, api_port: &str) {
    let upstream = bootstrap::k8s::parse_manifests(&upstream_text()).unwrap();
    let applied = applied(c);
    let mut used = BTreeSet::new();
    let mut where_: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &upstream {
        let found: Vec<&(String, Value)> = applied.iter().filter(|(_, o)| key(o) == key(u)).collect();
        assert_eq!(found.len(), 1, "{:?} is applied {} times", key(u), found.len());
        let (file, p) = found[0];
        let want = match u["kind"].as_str().unwrap() {
            "Namespace" => "0-prerequisites.yaml",
            "CustomResourceDefinition" => "1-crds.yaml",
            _ => "2-core.yaml",
        };
        assert_eq!(file, want, "{:?}", key(u));
        *where_.entry(want).or_default() += 1;
        used.extend(assert_only_listed_patches(u, p));
    }
    assert_eq!(where_["1-crds.yaml"], 11, "all 11 Flux CRDs in phase 1");
    assert_eq!(where_["2-core.yaml"], upstream.len() - 12);
    for p in PATCHES {
        assert!(
            used.contains(p.name),
            "patch {:?} changes nothing: remove it from the list",
            p.name
        );
    }

    // What the patches are for, observed on the applied controllers.
    let deployments: Vec<&Value> = applied
        .iter()
        .map(|(_, o)| o)
        .filter(|o| o["kind"] == "Deployment" && o["metadata"]["namespace"] == "flux-system")
        .collect();
    let mut ports = BTreeSet::new();
    for d in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        let name = d["metadata"]["name"].as_str().unwrap();
        assert_eq!(pod["hostNetwork"], true, "{name}");
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let var = |n: &str| env.iter().find(|e| e["name"] == n).map(|e| e["value"].clone());
        assert_eq!(var("KUBERNETES_SERVICE_PORT"), Some(Value::from(api_port)), "{name}");
        for p in pod["containers"][0]["ports"].as_array().unwrap() {
            assert!(
                ports.insert(p["containerPort"].as_i64().unwrap()),
                "{name}: host port {p} taken twice"
            );
        }
        let upstream_image =
            upstream.iter().find(|u| key(u) == key(d)).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
                .clone();
        assert_eq!(pod["containers"][0]["image"], upstream_image, "images are upstream's");
        // The critical-pods quota admits only priority classes it scopes.
        if let Some(pc) = pod["priorityClassName"].as_str() {
            assert!(["system-cluster-critical", "system-node-critical"].contains(&pc));
        }
    }
    assert_eq!(
        deployments.len(),
        4,
        "source, kustomize, helm and notification controllers"
    );
    let source = deployments
        .iter()
        .find(|d| d["metadata"]["name"] == "source-controller")
        .unwrap();
    let args: Vec<&str> = source["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--storage-adv-addr=$(POD_IP):9790"), "{args:?}");
}

#[test]
fn flux_objects_are_upstreams_plus_the_listed_patches_on_talos() {
    check_cluster(&cluster("simulated.toml"), "7445");
}

#[test]
fn flux_objects_are_upstreams_plus_the_listed_patches_on_k3s() {
    check_cluster(&cluster("rack-k3s.toml"), "6443");
}

#[test]
fn the_embedded_manifest_is_the_pinned_upstream_release() {
    let pin = flux::pin();
    let upstream = upstream_text();
    assert_eq!(
        flux::INSTALL_YAML,
        upstream,
        "phases/flux/install.yaml is the upstream file unchanged"
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(flux::INSTALL_YAML.as_bytes())),
        pin.sha256
    );
    assert_eq!(pin.version, "v2.9.0");
    assert_eq!(
        catalog::core().flux.version,
        pin.version,
        "phases/core.toml names the pinned Flux"
    );
    for (name, image) in &pin.images {
        let tag = image.rsplit(':').next().unwrap();
        assert!(upstream.contains(&format!("image: {image}")), "{name} {tag}");
    }
    assert_eq!(pin.images.len(), 4);
}

#[test]
fn every_patch_says_why() {
    for p in PATCHES {
        assert!(p.reason.len() > 40, "patch {:?} needs a reason", p.name);
        assert!(
            !p.fields.is_empty() || !p.flags.is_empty() || !p.env.is_empty(),
            "{}",
            p.name
        );
    }
}
