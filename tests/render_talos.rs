//! Talos rendering: every document of every rendered file validates against
//! the Talos v1.13 schema, and the configs say what the inventory says.

mod render_support;

use bootstrap::render::{self, SecretsBundle};
use render_support::*;
use serde_json::json;
use x509_parser::prelude::*;

fn render_inventory(rel: &str) -> (bootstrap::inventory::Inventory, render::Rendered) {
    let inv = load(rel);
    let mut all = render::Rendered::default();
    for c in &inv.clusters {
        all.files
            .extend(render::render_cluster(c, &fixture_secrets(c)).unwrap().files);
    }
    (inv, all)
}

fn text<'a>(r: &'a render::Rendered, path: &str) -> &'a str {
    let f = r
        .files
        .get(std::path::Path::new(path))
        .unwrap_or_else(|| panic!("{path} not rendered"));
    std::str::from_utf8(&f.bytes).unwrap()
}

#[test]
fn every_talos_document_validates_against_the_v1_13_schema() {
    let schema = talos_schema();
    let mut checked = 0;
    for inv in ["inventory/prod-talos.toml", "inventory/simulated.toml"] {
        let (_, r) = render_inventory(inv);
        for (path, f) in &r.files {
            if path.file_name().unwrap() == "talosconfig" {
                continue;
            }
            for (i, d) in documents(std::str::from_utf8(&f.bytes).unwrap()).iter().enumerate() {
                let errors: Vec<String> = schema
                    .iter_errors(d)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{inv}: {} document {}: {errors:#?}",
                    path.display(),
                    i + 1
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8 * 4, "checked {checked} documents");
}

#[test]
fn prod_talos_configs_follow_the_inventory() {
    let (_, r) = render_inventory("inventory/prod-talos.toml");
    let docs = documents(text(&r, "infra/infra-cp-1.yaml"));
    let main = doc(&docs, None);
    assert_eq!(main["machine"]["type"], "controlplane");
    assert_eq!(main["cluster"]["controlPlane"]["endpoint"], "https://10.25.11.10:6443");
    assert_eq!(main["cluster"]["clusterName"], "infra");
    assert_eq!(main["machine"]["certSANs"], json!(["10.25.11.10", "10.25.11.11"]));
    assert_eq!(
        main["machine"]["install"]["diskSelector"],
        json!({"model": "Samsung SSD 980*", "size": ">= 400GB"})
    );
    assert!(main["machine"]["install"].get("disk").is_none());
    assert_eq!(main["cluster"]["network"]["podSubnets"], json!(["10.244.0.0/16"]));
    assert_eq!(main["cluster"]["network"]["serviceSubnets"], json!(["10.245.0.0/16"]));
    assert_eq!(
        main["cluster"]["network"]["cni"]["name"], "none",
        "Cilium is installed in phase 2"
    );
    assert_eq!(main["cluster"]["proxy"]["disabled"], true);
    assert_eq!(
        main["machine"]["features"]["kubePrism"],
        json!({"enabled": true, "port": 7445})
    );
    assert_eq!(
        main["machine"]["nodeLabels"]["topology.kubernetes.io/region"],
        "homelab"
    );
    assert_eq!(
        main["cluster"]["allowSchedulingOnControlPlanes"], true,
        "no workers in infra"
    );
    assert!(main["machine"]["ca"]["key"].is_string() && main["cluster"]["etcd"]["ca"]["key"].is_string());
    assert_eq!(doc(&docs, Some("HostnameConfig"))["hostname"], "infra-cp-1");
    assert_eq!(
        doc(&docs, Some("LinkAliasConfig"))["selector"]["match"],
        "mac(link.permanent_addr) == \"02:25:11:00:00:11\""
    );
    let link = doc(&docs, Some("LinkConfig"));
    assert_eq!(link["addresses"], json!([{"address": "10.25.11.11/24"}]));
    assert_eq!(link["routes"], json!([{"gateway": "10.25.11.1"}]));
    assert_eq!(
        doc(&docs, Some("ResolverConfig"))["nameservers"],
        json!([{"address": "10.25.11.1"}])
    );
    let vip = doc(&docs, Some("Layer2VIPConfig"));
    assert_eq!(
        (vip["name"].as_str(), vip["link"].as_str()),
        (Some("10.25.11.10"), Some("net0"))
    );

    let apps3 = documents(text(&r, "apps/apps-cp-3.yaml"));
    assert_eq!(
        doc(&apps3, None)["machine"]["install"]["diskSelector"],
        json!({"wwid": "eui.0025385b71b12345"}),
        "a node's own install_disk replaces the default"
    );
    assert_eq!(
        doc(&apps3, None)["cluster"]["controlPlane"]["endpoint"],
        "https://10.25.11.20:6443"
    );

    let tc: serde_json::Value = yaml_serde::from_str(text(&r, "infra/talosconfig")).unwrap();
    assert_eq!(tc["context"], "infra");
    let ctx = &tc["contexts"]["infra"];
    assert_eq!(
        ctx["endpoints"],
        json!(["10.25.11.11", "10.25.11.12", "10.25.11.13"]),
        "never the VIP"
    );
}

#[test]
fn workers_carry_ca_certificates_only() {
    let (inv, r) = render_inventory("inventory/simulated.toml");
    let c = &inv.clusters[0];
    let docs = documents(text(&r, "sim/worker-1.yaml"));
    let main = doc(&docs, None);
    assert_eq!(main["machine"]["type"], "worker");
    assert!(main["machine"]["ca"]["crt"].is_string());
    assert!(main["machine"]["ca"].get("key").is_none(), "no OS CA key on a worker");
    assert!(
        main["cluster"]["ca"].get("key").is_none(),
        "no Kubernetes CA key on a worker"
    );
    for absent in [
        "etcd",
        "aggregatorCA",
        "serviceAccount",
        "secretboxEncryptionSecret",
        "apiServer",
    ] {
        assert!(main["cluster"].get(absent).is_none(), "worker has cluster.{absent}");
    }
    assert!(
        docs.iter().all(|d| d.get("kind") != Some(&json!("Layer2VIPConfig"))),
        "VIP on control planes only"
    );
    assert_eq!(main["machine"]["install"]["disk"], "/dev/vda");
    // No key material of the bundle appears anywhere in the worker's file.
    let SecretsBundle::Talos(b) = fixture_secrets(c) else {
        unreachable!()
    };
    let s = &b.secrets.certs;
    let raw = text(&r, "sim/worker-1.yaml");
    for key in [
        &s.os.key,
        &s.k8s.key,
        &s.etcd.key,
        &s.k8saggregator.key,
        &s.k8sserviceaccount.key,
    ] {
        assert!(!raw.contains(key.as_str()));
    }
    let cp = documents(text(&r, "sim/cp-1.yaml"));
    assert!(doc(&cp, None)["cluster"]["serviceAccount"]["key"].is_string());
}

#[test]
fn talosconfig_client_certificate_is_os_admin_client_auth_only_and_chains_to_the_os_ca() {
    let (_, r) = render_inventory("inventory/simulated.toml");
    let tc: serde_json::Value = yaml_serde::from_str(text(&r, "sim/talosconfig")).unwrap();
    let ctx = &tc["contexts"]["sim"];
    assert_eq!(ctx["endpoints"], json!(["127.1.0.11", "127.1.0.12", "127.1.0.13"]));
    let (label, der) = pem_der(ctx["crt"].as_str().unwrap());
    assert_eq!(label, "CERTIFICATE");
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let orgs: Vec<&str> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(orgs, ["os:admin"]);
    let eku = cert.extended_key_usage().unwrap().expect("EKU present").value;
    assert!(
        eku.client_auth && !eku.server_auth && eku.other.is_empty() && !eku.any,
        "{eku:?}"
    );
    assert!(!cert.is_ca());
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        "1.3.101.112",
        "Ed25519"
    );
    let (_, ca_der) = pem_der(ctx["ca"].as_str().unwrap());
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    assert!(ca.is_ca());
    let (key_label, _) = pem_der(ctx["key"].as_str().unwrap());
    assert_eq!(key_label, "ED25519 PRIVATE KEY");
}

#[test]
fn patches_apply_in_order_all_role_node_and_user_templates_overlay() {
    let inv = load("tests/fixtures/patched/inventory.toml");
    let c = &inv.clusters[0];
    let r = render::render_cluster(c, &fixture_secrets(c)).unwrap();
    let cp = documents(text(&r, "patched/cp-1.yaml"));
    let w = documents(text(&r, "patched/w-1.yaml"));
    let cpm = doc(&cp, None);
    // all: sysctl a=all; controlplane: a=cp (overrides all); node cp-1 (JSON patch): a=node.
    assert_eq!(cpm["machine"]["sysctls"]["net.test.a"], "node");
    assert_eq!(cpm["machine"]["sysctls"]["net.test.b"], "cp");
    assert_eq!(doc(&w, None)["machine"]["sysctls"]["net.test.a"], "all");
    assert_eq!(doc(&w, None)["machine"]["sysctls"]["net.test.b"], "worker");
    // A patch document of a new kind is appended; `$patch: delete` removes.
    assert_eq!(doc(&cp, Some("TimeSyncConfig"))["ntp"]["servers"], json!(["10.0.0.1"]));
    assert!(cpm["machine"]["features"].get("hostDNS").is_none());
    // The user's hostname template replaces the bundled one (others stay bundled).
    assert_eq!(doc(&cp, Some("HostnameConfig"))["hostname"], "patched-cp-1");
    let schema = talos_schema();
    for d in cp.iter().chain(&w) {
        let errors: Vec<String> = schema.iter_errors(d).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[test]
fn template_errors_name_the_file_and_line() {
    let mut inv = load("tests/fixtures/patched/inventory.toml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("talos")).unwrap();
    std::fs::write(
        dir.path().join("talos/worker.yaml.j2"),
        "version: v1alpha1\nmachine:\n  type: {{ node.nope }}\n",
    )
    .unwrap();
    let c = &mut inv.clusters[0];
    c.templates = Some(dir.path().to_path_buf());
    let err = format!("{:#}", render::render_cluster(c, &fixture_secrets(c)).unwrap_err());
    assert!(err.contains("talos/worker.yaml.j2") && err.contains("line 3"), "{err}");
    assert!(err.contains("node w-1"), "names the node: {err}");
}

#[test]
fn rendering_is_deterministic() {
    let (_, a) = render_inventory("inventory/prod-talos.toml");
    let (_, b) = render_inventory("inventory/prod-talos.toml");
    assert_eq!(a.files, b.files);
    assert!(a.files.values().all(|f| f.mode == 0o600), "Talos files hold secrets");
}

#[test]
fn data_disks_become_user_volumes_and_ceph_disks_stay_raw() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
        .unwrap()
        .replace(
            "mac = \"02:00:7f:01:00:15\"\n",
            "mac = \"02:00:7f:01:00:15\"\ndata_disks = [\n  { name = \"local-hdd\", model = \"ST4000*\", size = \"3TB-5TB\", filesystem = \"ext4\" },\n  { name = \"osd\", serial = \"S5GXNF0R512345\", ceph = true },\n]\n",
        );
    let path = dir.path().join("i.toml");
    std::fs::write(&path, inventory).unwrap();
    let inv = bootstrap::inventory::load(&path).unwrap().inventory;
    let c = &inv.clusters[0];
    let r = render::render_cluster(c, &fixture_secrets(c)).unwrap();
    let docs = documents(text(&r, "sim/worker-1.yaml"));
    let volumes: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "UserVolumeConfig").collect();
    assert_eq!(
        volumes.len(),
        1,
        "one user volume; the Ceph disk stays raw: {volumes:#?}"
    );
    let v = volumes[0];
    assert_eq!(v["name"], "local-hdd");
    assert_eq!(v["filesystem"]["type"], "ext4");
    assert_eq!(v["provisioning"]["minSize"], "3TB");
    assert_eq!(
        v["provisioning"]["diskSelector"]["match"],
        r#"glob("ST4000*", disk.model) && disk.size >= 3000000000000u && disk.size <= 5000000000000u && disk.transport != "" && !disk.readonly && !disk.cdrom && !system_disk"#
    );
    let schema = talos_schema();
    for d in &docs {
        let errors: Vec<String> = schema.iter_errors(d).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{d:#?}: {errors:#?}");
    }
    let other = documents(text(&r, "sim/worker-2.yaml"));
    assert!(
        other.iter().all(|d| d["kind"] != "UserVolumeConfig"),
        "worker-2 has no data disks"
    );
}

/// Talos discards unpacked layers by default (talos `hack/cri-plugin.part`) and
/// Spegel exits then: every machine config carries the CRI part that keeps
/// them, in the `machine.files` form Talos before v1.14 merges (spegel.mdx).
#[test]
fn every_machine_config_keeps_unpacked_layers_for_spegel() {
    let (_, r) = render_inventory("inventory/prod-talos.toml");
    for (path, f) in r.files.iter().filter(|(p, _)| p.file_name().unwrap() != "talosconfig") {
        let docs = documents(std::str::from_utf8(&f.bytes).unwrap());
        let files = doc(&docs, None)["machine"]["files"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let part = files
            .iter()
            .find(|f| f["path"] == "/etc/cri/conf.d/20-customization.part")
            .unwrap_or_else(|| panic!("{}: no CRI customisation in machine.files", path.display()));
        assert_eq!(part["op"], "create");
        let toml: toml::Table = part["content"].as_str().unwrap().parse().expect("the part is TOML");
        assert_eq!(
            toml["plugins"]["io.containerd.cri.v1.images"]["discard_unpacked_layers"],
            toml::Value::Boolean(false),
            "{}",
            path.display()
        );
    }
}

/// The simulated inventory with `[cluster.registries]` entries (CA files in `dir`).
fn with_registries(dir: &std::path::Path) -> bootstrap::inventory::Cluster {
    let ca = rcgen::generate_simple_self_signed(vec!["mirror.example".into()]).unwrap();
    std::fs::write(dir.join("mirror-ca.pem"), ca.cert.pem()).unwrap();
    let text = std::fs::read_to_string(repo("inventory/simulated.toml"))
        .unwrap()
        .replace(
            "[cluster.gitops]",
            r#"[cluster.registries."docker.io"]
mirrors = ["https://mirror.example:5000", "http://cache.example/docker"]
ca = "file:mirror-ca.pem"

[cluster.registries."ghcr.io"]
mirrors = ["https://harbor.example/v2/ghcr.io"]
override_path = true

[cluster.gitops]"#,
        );
    let path = dir.join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    bootstrap::inventory::load(&path).unwrap().inventory.clusters.remove(0)
}

#[test]
fn registry_mirrors_become_talos_mirror_and_tls_documents_valid_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_registries(dir.path());
    let r = render::render_cluster(&c, &fixture_secrets(&c)).unwrap();
    let schema = talos_schema();
    let ca = std::fs::read_to_string(dir.path().join("mirror-ca.pem")).unwrap();
    for node in ["cp-1", "worker-1"] {
        let docs = documents(text(&r, &format!("sim/{node}.yaml")));
        for d in &docs {
            let errors: Vec<String> = schema
                .iter_errors(d)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{node}: {d}: {errors:#?}");
        }
        let mirrors: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "RegistryMirrorConfig").collect();
        assert_eq!(mirrors.len(), 2, "{node}");
        let docker = mirrors.iter().find(|d| d["name"] == "docker.io").unwrap();
        assert_eq!(
            docker["endpoints"],
            json!([{"url": "https://mirror.example:5000"}, {"url": "http://cache.example/docker"}])
        );
        let ghcr = mirrors.iter().find(|d| d["name"] == "ghcr.io").unwrap();
        assert_eq!(
            ghcr["endpoints"],
            json!([{"url": "https://harbor.example/v2/ghcr.io", "overridePath": true}])
        );
        let tls: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "RegistryTLSConfig").collect();
        assert_eq!(tls.len(), 1, "a CA for the https mirror host only: {tls:?}");
        assert_eq!(
            tls[0]["name"], "mirror.example:5000",
            "keyed by the endpoint's host:port"
        );
        assert_eq!(tls[0]["ca"].as_str().map(str::trim_end), Some(ca.trim_end()));
        assert!(
            doc(&docs, None)["machine"].get("registries").is_none(),
            "machine.registries is not in the v1.13 schema"
        );
    }
}

#[test]
fn a_registry_ca_that_is_not_pem_fails_the_render_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_registries(dir.path());
    std::fs::write(dir.path().join("mirror-ca.pem"), "not a certificate\n").unwrap();
    let err = format!("{:#}", render::render_cluster(&c, &fixture_secrets(&c)).unwrap_err());
    assert!(
        err.contains("mirror-ca.pem") && err.contains("docker.io") && err.contains("not PEM"),
        "{err}"
    );
}
