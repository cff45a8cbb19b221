//! `--merge-kubeconfig`: merges the cluster's kubeconfig into the operator's
//! (`$KUBECONFIG`'s first file, else `~/.kube/config`), replacing entries of
//! the same name and keeping everything else. Written atomically, 0600.

use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;

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

/// Merges `kubeconfig` into the file at `path` (created when missing), with
/// kube's own [`Kubeconfig`] types and merge rules: entries of the new file
/// replace same-named ones, the operator's `current-context` is kept when set.
pub fn merge_into(path: &Path, kubeconfig: &[u8]) -> Result<(), String> {
    let parse = |bytes: &[u8], what: &dyn std::fmt::Display| {
        std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| Kubeconfig::from_yaml(text).map_err(|e| e.to_string()))
            .map_err(|e| format!("{what}: {e}"))
    };
    let new = parse(kubeconfig, &"the new kubeconfig")?;
    let existing = match std::fs::read(path) {
        Ok(bytes) => parse(&bytes, &path.display())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kubeconfig::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let current = existing.current_context.clone().filter(|c| !c.is_empty());
    // `merge` keeps the first file's entry for a name (kubectl's rule), so the new file goes first.
    let mut merged = new.merge(existing).map_err(|e| format!("{}: {e}", path.display()))?;
    if current.is_some() {
        merged.current_context = current;
    }
    merged.api_version.get_or_insert_with(|| "v1".into());
    merged.kind.get_or_insert_with(|| "Config".into());
    let text = yaml_serde::to_string(&merged).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::fsutil::write_secret(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_serde::Value;

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
        let v: Value = yaml_serde::from_slice(&std::fs::read(&path).unwrap()).unwrap();
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
        let v: Value = yaml_serde::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["current-context"], "admin@sim");
    }
}
