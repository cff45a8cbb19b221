//! `--merge-kubeconfig`: merges the cluster's kubeconfig into the operator's
//! (`$KUBECONFIG`'s first file, else `~/.kube/config`), replacing entries of
//! the same name and keeping everything else. Written atomically, 0600.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

/// The operator's kubeconfig path.
pub fn home_kubeconfig() -> Result<PathBuf, String> {
    if let Some(first) = std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next()) {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").ok_or("neither KUBECONFIG nor HOME is set")?;
    Ok(Path::new(&home).join(".kube").join("config"))
}

/// Merges `kubeconfig` (YAML) into the operator's kubeconfig; returns its path.
pub fn merge_into_home(kubeconfig: &[u8]) -> Result<PathBuf, String> {
    let path = home_kubeconfig()?;
    merge_into(&path, kubeconfig)?;
    Ok(path)
}

/// Merges `kubeconfig` into the file at `path` (created when missing).
pub fn merge_into(path: &Path, kubeconfig: &[u8]) -> Result<(), String> {
    let new: Value = serde_yaml::from_slice(kubeconfig).map_err(|e| format!("the new kubeconfig: {e}"))?;
    let mut existing: Value = match std::fs::read(path) {
        Ok(bytes) => serde_yaml::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Mapping(Mapping::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    merge(&mut existing, &new);
    let text = serde_yaml::to_string(&existing).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::fsutil::write_secret(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Entries of `new` replace same-named ones in `into`; `current-context` is
/// set only when `into` has none.
fn merge(into: &mut Value, new: &Value) {
    if !into.is_mapping() {
        *into = Value::Mapping(Mapping::new());
    }
    let into = into.as_mapping_mut().expect("a mapping");
    for key in ["apiVersion", "kind"] {
        if !into.contains_key(key)
            && let Some(v) = new.get(key)
        {
            into.insert(key.into(), v.clone());
        }
    }
    for list in ["clusters", "users", "contexts"] {
        let entries = into.entry(list.into()).or_insert_with(|| Value::Sequence(Vec::new()));
        if !entries.is_sequence() {
            *entries = Value::Sequence(Vec::new());
        }
        let entries = entries.as_sequence_mut().expect("a sequence");
        for entry in new.get(list).and_then(Value::as_sequence).into_iter().flatten() {
            let name = entry.get("name");
            match entries.iter_mut().find(|e| e.get("name") == name) {
                Some(slot) => *slot = entry.clone(),
                None => entries.push(entry.clone()),
            }
        }
    }
    let has_current = into
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has_current && let Some(current) = new.get("current-context") {
        into.insert("current-context".into(), current.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {server: 'https://127.1.0.10:6443'}\nusers:\n- name: admin@sim\n  user: {token: x}\ncontexts:\n- name: admin@sim\n  context: {cluster: sim, user: admin@sim}\ncurrent-context: admin@sim\n";

    #[test]
    fn merges_replacing_same_names_and_keeping_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube/config");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {server: 'https://old:6443'}\n- name: other\n  cluster: {server: 'https://other:6443'}\ncontexts: []\nusers: []\ncurrent-context: other\n",
        )
        .unwrap();
        merge_into(&path, NEW.as_bytes()).unwrap();
        let v: Value = serde_yaml::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let clusters = v["clusters"].as_sequence().unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[0]["cluster"]["server"], "https://127.1.0.10:6443");
        assert_eq!(v["contexts"][0]["name"], "admin@sim");
        assert_eq!(v["current-context"], "other", "the operator's current context is kept");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn creates_the_file_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        merge_into(&path, NEW.as_bytes()).unwrap();
        let v: Value = serde_yaml::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["current-context"], "admin@sim");
    }
}
