//! Golden files: every example inventory rendered with the committed
//! TEST-ONLY secrets must match `tests/golden/<inventory>/` byte for byte.
//! Refresh after an intended change with `UPDATE_GOLDEN=1 cargo test --test render_golden`.

mod render_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bootstrap::render;
use render_support::*;

fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn example_inventories_match_their_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inventories: Vec<PathBuf> = std::fs::read_dir(repo("inventory"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    inventories.sort();
    assert!(inventories.len() >= 4);
    let mut mismatches = Vec::new();
    for inv_path in inventories {
        let stem = inv_path.file_stem().unwrap().to_string_lossy().into_owned();
        let inv = load(&format!("inventory/{stem}.toml"));
        let mut rendered = render::Rendered::default();
        for c in &inv.clusters {
            rendered
                .files
                .extend(render::render_cluster(c, &fixture_secrets(c)).unwrap().files);
            // What `bootstrap render` adds: the exported manifests of phases 0-3.
            for (path, text) in bootstrap::phases::export::manifests(c).unwrap() {
                rendered.add(PathBuf::from(&c.name).join(path), text, 0o644);
            }
        }
        let golden_dir = repo("tests/golden").join(&stem);
        if update {
            let _ = std::fs::remove_dir_all(&golden_dir);
            render::write(&golden_dir, &rendered).unwrap();
            continue;
        }
        let want = files_under(&golden_dir);
        let got: BTreeMap<PathBuf, Vec<u8>> = rendered.files.into_iter().map(|(p, f)| (p, f.bytes)).collect();
        for p in want.keys().chain(got.keys()).collect::<std::collections::BTreeSet<_>>() {
            if want.get(p) != got.get(p) {
                mismatches.push(format!("{stem}/{}", p.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered output differs from tests/golden for: {mismatches:#?}\n(if intended: UPDATE_GOLDEN=1 cargo test --test render_golden)"
    );
}
