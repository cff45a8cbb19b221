//! Renders a generated 1,000-node inventory (Talos and k3s) with the
//! committed TEST-ONLY secrets: secrets generation (the RSA-4096 key, once per
//! cluster) is outside the measured loop. Target: < 1 s per cluster in release.
//!
//! `cargo bench --bench render`

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use bootstrap::inventory;
use bootstrap::render::{self, K3sSecrets, SecretsBundle, TalosBundle};
use criterion::{Criterion, criterion_group, criterion_main};

/// An inventory of one cluster with 3 control planes and `n - 3` workers.
fn inventory_text(distribution: &str, n: usize) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "[defaults]\ninstall_disk = {{ model = \"Samsung SSD 980*\", size = \"400GB-2TB\" }}"
    )
    .unwrap();
    writeln!(s, "labels = {{ \"topology.kubernetes.io/region\" = \"bench\" }}").unwrap();
    if distribution == "k3s" {
        writeln!(s, "[defaults.ssh]\nuser = \"root\"").unwrap();
    }
    writeln!(
        s,
        "[[cluster]]\nname = \"big\"\ndistribution = \"{distribution}\"\nendpoint = \"10.20.0.2\"\n\
         [cluster.network]\nnode_cidr = \"10.20.0.0/20\"\ngateway = \"10.20.0.1\"\nnameservers = [\"10.20.0.1\"]\n\
         vip = \"10.20.0.2\"\npod_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.96.0.0/16\""
    )
    .unwrap();
    for i in 0..n {
        let role = if i < 3 { "controlplane" } else { "worker" };
        let ip = 10 + i;
        writeln!(
            s,
            "[[cluster.node]]\nname = \"node-{i:04}\"\nrole = \"{role}\"\nip = \"10.20.{}.{}\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"",
            ip / 256,
            ip % 256,
            i / 256,
            i % 256
        )
        .unwrap();
    }
    s
}

fn bench(c: &mut Criterion) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let talos = SecretsBundle::Talos(TalosBundle::load(&fixtures.join("talos")).unwrap().unwrap());
    let k3s = SecretsBundle::K3s(K3sSecrets::load(&fixtures.join("k3s")).unwrap().unwrap());
    let mut g = c.benchmark_group("render");
    g.sample_size(10);
    for (dist, secrets) in [("talos", &talos), ("k3s", &k3s)] {
        let text = inventory_text(dist, 1000);
        let inv = inventory::load_str(&text, Path::new("/bench/inventory.toml"))
            .unwrap_or_else(|d| panic!("generated inventory invalid: {d:?}"))
            .inventory;
        let cluster = &inv.clusters[0];
        assert_eq!(cluster.nodes.len(), 1000);
        g.bench_function(format!("{dist} 1000 nodes"), |b| {
            b.iter(|| black_box(render::render_cluster(cluster, secrets).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
