//! Every file in `tests/inventory_errors/` is an inventory with one mistake (or
//! several) and header lines saying exactly what must be reported:
//! `# expect error at LINE:COL | FIELD PATH | MESSAGE FRAGMENT` (`-` / `*` when
//! the location / path is not asserted).

use std::path::{Path, PathBuf};

use bootstrap::inventory::{self, Diagnostic, Severity};

struct Expect {
    severity: Severity,
    at: Option<(usize, usize)>,
    path: Option<String>,
    fragment: String,
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect "))
        .map(|l| {
            let parts: Vec<&str> = l.splitn(3, " | ").collect();
            let (head, path, fragment) = (parts[0], parts[1], parts[2]);
            let (sev, loc) = head.split_once(" at ").expect("`SEVERITY at LOC`");
            let severity = if sev == "error" {
                Severity::Error
            } else {
                Severity::Warning
            };
            let at = (loc != "-").then(|| {
                let (l, c) = loc.split_once(':').unwrap();
                (l.parse().unwrap(), c.parse().unwrap())
            });
            Expect {
                severity,
                at,
                path: (path != "*").then(|| path.to_owned()),
                fragment: fragment.to_owned(),
            }
        })
        .collect()
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inventory_errors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn matches(d: &Diagnostic, e: &Expect) -> bool {
    d.severity == e.severity
        && e.at.is_none_or(|(l, c)| d.line == Some(l) && d.column == Some(c))
        && e.path.as_ref().is_none_or(|p| &d.path == p)
        && d.message.contains(&e.fragment)
}

#[test]
fn corpus_is_large_enough() {
    assert!(
        corpus().len() >= 40,
        "the corpus must cover at least 40 invalid inventories"
    );
}

#[test]
fn every_invalid_inventory_reports_what_its_header_expects() {
    let mut failures = Vec::new();
    for file in corpus() {
        let text = std::fs::read_to_string(&file).unwrap();
        let expects = expectations(&text);
        assert!(!expects.is_empty(), "{}: no `# expect` line", file.display());
        let wants_error = expects.iter().any(|e| e.severity == Severity::Error);
        let diags = match inventory::load(&file) {
            Ok(loaded) if wants_error => {
                failures.push(format!("{}: loaded without error", file.display()));
                loaded.warnings
            }
            Ok(loaded) => loaded.warnings,
            Err(diags) if !wants_error => {
                failures.push(format!("{}: unexpected errors:\n{diags}", file.display()));
                diags.0
            }
            Err(diags) => diags.0,
        };
        for e in &expects {
            if !diags.iter().any(|d| matches(d, e)) {
                let got: Vec<String> = diags.iter().map(ToString::to_string).collect();
                failures.push(format!(
                    "{}: expected {:?} at {:?} path {:?} containing {:?}; got:\n  {}",
                    file.display(),
                    e.severity,
                    e.at,
                    e.path,
                    e.fragment,
                    got.join("\n  ")
                ));
            }
        }
        for d in &diags {
            let shown = d.to_string();
            assert!(
                shown.starts_with(&file.display().to_string()),
                "diagnostic names the file: {shown}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn example_inventories_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded = inventory::load(&path).unwrap_or_else(|d| panic!("{}:\n{d}", path.display()));
            assert!(loaded.warnings.is_empty(), "{}: {:?}", path.display(), loaded.warnings);
        }
    }
}

#[test]
fn prod_example_matches_the_seed_architecture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/prod-talos.toml");
    let inv = inventory::load(&path).unwrap().inventory;
    let infra = inv.cluster("infra").unwrap();
    let apps = inv.cluster("apps").unwrap();
    let ips = |c: &inventory::Cluster| c.nodes.iter().map(|n| n.ip.to_string()).collect::<Vec<_>>();
    assert_eq!(ips(infra), ["10.25.11.11", "10.25.11.12", "10.25.11.13"]);
    assert_eq!(ips(apps), ["10.25.11.14", "10.25.11.15", "10.25.11.16"]);
    assert_eq!(infra.network.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(apps.network.service_cidr.to_string(), "10.247.0.0/16");
    assert_eq!(infra.network.bgp_asn, Some(64512));
    assert_eq!(infra.network.lb_pool.unwrap().to_string(), "10.25.11.200-10.25.11.249");
    // Defaults are inherited, node values win.
    assert_eq!(
        infra.nodes[0].install_disk.as_ref().unwrap().model.as_deref(),
        Some("Samsung SSD 980*")
    );
    assert_eq!(
        apps.nodes[2].install_disk.as_ref().unwrap().wwid.as_deref(),
        Some("eui.0025385b71b12345")
    );
    assert_eq!(infra.nodes[0].labels["topology.kubernetes.io/region"], "homelab");
}
