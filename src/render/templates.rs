//! The minijinja environment: bundled templates (embedded in the binary, so
//! `render` works from any directory), overlaid file by file by the
//! cluster's own template directory (`templates = "..."` in the inventory).

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

/// The bundled templates, by name (path under `templates/`).
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "talos/controlplane.yaml.j2",
        include_str!("../../templates/talos/controlplane.yaml.j2"),
    ),
    (
        "talos/worker.yaml.j2",
        include_str!("../../templates/talos/worker.yaml.j2"),
    ),
    (
        "talos/machine-common.yaml.j2",
        include_str!("../../templates/talos/machine-common.yaml.j2"),
    ),
    (
        "talos/cluster-network.yaml.j2",
        include_str!("../../templates/talos/cluster-network.yaml.j2"),
    ),
    (
        "talos/cluster-proxy.yaml.j2",
        include_str!("../../templates/talos/cluster-proxy.yaml.j2"),
    ),
    (
        "talos/documents.yaml.j2",
        include_str!("../../templates/talos/documents.yaml.j2"),
    ),
    (
        "talos/registries.yaml.j2",
        include_str!("../../templates/talos/registries.yaml.j2"),
    ),
    (
        "talos/talosconfig.j2",
        include_str!("../../templates/talos/talosconfig.j2"),
    ),
    ("k3s/config.yaml.j2", include_str!("../../templates/k3s/config.yaml.j2")),
    ("k3s/install.sh.j2", include_str!("../../templates/k3s/install.sh.j2")),
];

/// Templates of one cluster.
pub struct Templates {
    env: Environment<'static>,
    user_dir: Option<PathBuf>,
}

impl Templates {
    /// Bundled templates overlaid by `user_dir` (a file there replaces the bundled one of the same name).
    pub fn new(user_dir: Option<&Path>) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.add_filter("sh", shell_quote);
        let dir = user_dir.map(Path::to_path_buf);
        let overlay = dir.clone();
        env.set_loader(move |name| {
            if name.split('/').any(|c| c == ".." || c.is_empty()) {
                return Ok(None);
            }
            if let Some(d) = &overlay {
                let p = d.join(name);
                match std::fs::read_to_string(&p) {
                    Ok(s) => return Ok(Some(s)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            format!("cannot read user template {}: {e}", p.display()),
                        ));
                    }
                }
            }
            Ok(BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, s)| (*s).to_owned()))
        });
        Self { env, user_dir: dir }
    }

    /// Renders template `name` with `ctx`; errors name the template file and line.
    pub fn render(&self, name: &str, ctx: minijinja::Value) -> anyhow::Result<String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| anyhow::anyhow!(self.describe(&e)))
    }

    /// Where template `name` comes from: the user file, or `bundled`.
    pub fn origin(&self, name: &str) -> String {
        match &self.user_dir {
            Some(d) if d.join(name).is_file() => d.join(name).display().to_string(),
            _ => format!("bundled templates/{name}"),
        }
    }

    fn describe(&self, e: &minijinja::Error) -> String {
        let mut msg = String::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        // The innermost template error carries the real location (e.g. inside an include).
        let mut best = e;
        while let Some(err) = cur {
            if let Some(m) = err.downcast_ref::<minijinja::Error>()
                && m.name().is_some()
            {
                best = m;
            }
            cur = err.source();
        }
        let name = best.name().unwrap_or("?");
        msg.push_str(&format!("template {} ({})", name, self.origin(name)));
        if let Some(line) = best.line() {
            msg.push_str(&format!(", line {line}"));
        }
        msg.push_str(&format!(": {}", best.kind()));
        if let Some(d) = best.detail() {
            msg.push_str(&format!(": {d}"));
        }
        msg
    }
}

/// A template value from anything serialisable.
pub fn value<T: serde::Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// `sh` filter: quotes a value for POSIX shells ('...' with embedded quotes escaped).
fn shell_quote(v: minijinja::Value) -> String {
    let s = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_directory_overlays_and_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("k3s")).unwrap();
        std::fs::write(dir.path().join("k3s/config.yaml.j2"), "a: 1\nb: {{ nope.x }}\n").unwrap();
        let t = Templates::new(Some(dir.path()));
        let err = t
            .render("k3s/config.yaml.j2", minijinja::context! {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("k3s/config.yaml.j2"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(
            err.contains(&dir.path().display().to_string()),
            "names the user file: {err}"
        );
        std::fs::write(dir.path().join("k3s/config.yaml.j2"), "a: {% if %}\n").unwrap();
        let t = Templates::new(Some(dir.path()));
        let err = t
            .render("k3s/config.yaml.j2", minijinja::context! {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("syntax error"), "{err}");
        let q = shell_quote(minijinja::Value::from("it's"));
        assert_eq!(q, r"'it'\''s'");
    }
}
