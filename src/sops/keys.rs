//! Where age identities are found, as sops looks for them
//! (`age/keysource.go` loadIdentities, v3.13): the keys in `SOPS_AGE_KEY`
//! (several per line allowed), the file named by `SOPS_AGE_KEY_FILE`, the
//! output of `SOPS_AGE_KEY_CMD` (run with `SOPS_AGE_RECIPIENT` set to the
//! recipient being tried), and `<user config dir>/sops/age/keys.txt`. Like
//! sops, every source that is present is used, not only the first. The user
//! config dir is `$XDG_CONFIG_HOME` (honoured on macOS too, `getUserConfigDir`),
//! else Go's `os.UserConfigDir`: `~/.config` on Linux. SSH keys, plugins,
//! post-quantum and passphrase-protected identities are not supported here.
//! Messages name the sources, never a key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use super::error::ErrorKind;

/// The places identities may come from (normally [`KeySources::from_env`]).
/// `Debug` shows whether `SOPS_AGE_KEY` is set, never its keys.
#[derive(Clone, Default)]
pub struct KeySources {
    /// `SOPS_AGE_KEY`: the identities themselves.
    pub age_key: Option<String>,
    /// `SOPS_AGE_KEY_FILE`.
    pub age_key_file: Option<PathBuf>,
    /// `SOPS_AGE_KEY_CMD`: a command whose stdout holds identities.
    pub age_key_cmd: Option<String>,
    /// The user config dir (`sops/age/keys.txt` is looked for inside); `None` when undetermined.
    pub config_dir: Option<PathBuf>,
}

impl std::fmt::Debug for KeySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySources")
            .field("age_key", &self.age_key.as_ref().map(|_| "***"))
            .field("age_key_file", &self.age_key_file)
            .field("age_key_cmd", &self.age_key_cmd)
            .field("config_dir", &self.config_dir)
            .finish()
    }
}

/// Parsed identities and where they were looked for.
pub struct Identities {
    pub ids: Vec<age::x25519::Identity>,
    /// The sources consulted, for messages.
    pub searched: Vec<String>,
    /// Sources that were set but unusable (unreadable file, failed command).
    pub problems: Vec<String>,
}

impl KeySources {
    /// The sources this process's environment names.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        Self {
            age_key: var("SOPS_AGE_KEY"),
            age_key_file: var("SOPS_AGE_KEY_FILE").map(PathBuf::from),
            age_key_cmd: var("SOPS_AGE_KEY_CMD"),
            config_dir: user_config_dir(var("XDG_CONFIG_HOME"), var("HOME")),
        }
    }

    /// The user config dir's `sops/age/keys.txt`.
    pub fn config_keys_file(&self) -> Option<PathBuf> {
        self.config_dir.as_ref().map(|d| d.join("sops/age/keys.txt"))
    }

    /// The identities of every source except the command (which depends on
    /// the recipient: see [`KeySources::from_cmd`]).
    pub fn load(&self) -> Result<Identities, ErrorKind> {
        let mut out = Identities {
            ids: Vec::new(),
            searched: Vec::new(),
            problems: Vec::new(),
        };
        out.searched.push("SOPS_AGE_KEY".into());
        if let Some(text) = &self.age_key {
            out.ids.extend(parse(text, "SOPS_AGE_KEY", true)?);
        }
        match &self.age_key_file {
            Some(path) => {
                let location = format!("SOPS_AGE_KEY_FILE ({})", path.display());
                match std::fs::read_to_string(path) {
                    Ok(text) => out.ids.extend(parse(&text, &location, false)?),
                    Err(e) => out.problems.push(format!("{location}: {e}")),
                }
                out.searched.push(location);
            }
            None => out.searched.push("SOPS_AGE_KEY_FILE".into()),
        }
        if self.age_key_cmd.is_some() {
            out.searched.push("SOPS_AGE_KEY_CMD".into());
        }
        if let Some(path) = self.config_keys_file() {
            match std::fs::read_to_string(&path) {
                Ok(text) => out.ids.extend(parse(&text, &path.display().to_string(), false)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out.problems.push(format!("{}: {e}", path.display())),
            }
            out.searched.push(path.display().to_string());
        }
        Ok(out)
    }

    /// The identities `SOPS_AGE_KEY_CMD` prints for `recipient` (none when unset).
    pub fn from_cmd(&self, recipient: &str) -> Result<Vec<age::x25519::Identity>, String> {
        let Some(cmd) = &self.age_key_cmd else {
            return Ok(Vec::new());
        };
        let args = split_command(cmd).ok_or("SOPS_AGE_KEY_CMD: unbalanced quotes")?;
        let (program, args) = args.split_first().ok_or("SOPS_AGE_KEY_CMD is empty")?;
        let out = Command::new(program)
            .args(args)
            .env("SOPS_AGE_RECIPIENT", recipient)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("SOPS_AGE_KEY_CMD: cannot run {program}: {e}"))?;
        if !out.status.success() {
            return Err(format!("SOPS_AGE_KEY_CMD: {program} exited with {}", out.status));
        }
        let text = String::from_utf8(out.stdout).map_err(|_| "SOPS_AGE_KEY_CMD printed non-UTF-8 output".to_owned())?;
        parse(&text, "SOPS_AGE_KEY_CMD", false).map_err(|e| e.to_string())
    }
}

/// `$XDG_CONFIG_HOME` when set (it must be absolute, as Go requires), else
/// the platform's config dir under `$HOME`.
pub fn user_config_dir(xdg: Option<String>, home: Option<String>) -> Option<PathBuf> {
    if let Some(x) = xdg.filter(|x| !x.is_empty()) {
        return Path::new(&x).is_absolute().then(|| PathBuf::from(x));
    }
    let home = PathBuf::from(home.filter(|h| !h.is_empty())?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library/Application Support")
    } else {
        home.join(".config")
    })
}

/// Parses an identity list (`age/keysource.go` parseIdentities): one per
/// line, or several per line split at whitespace for `SOPS_AGE_KEY`; empty
/// lines and lines starting with `#` skipped.
fn parse(text: &str, location: &str, several_per_line: bool) -> Result<Vec<age::x25519::Identity>, ErrorKind> {
    if text.starts_with("age-encryption") || text.starts_with("-----BEGIN AGE") {
        return Err(ErrorKind::Identity(format!(
            "{location} is a passphrase-protected identity file, which bootstrap cannot open; use a plain key file"
        )));
    }
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = if several_per_line {
            line.split_whitespace().collect()
        } else {
            vec![line.trim_end_matches('\r')]
        };
        for word in words {
            let at = || format!("{location} line {}", n + 1);
            let kind = if word.starts_with("AGE-PLUGIN-") {
                "an age plugin identity"
            } else if word.starts_with("AGE-SECRET-KEY-PQ-1") {
                "a post-quantum identity"
            } else if word.starts_with("AGE-SECRET-KEY-1") {
                let id = age::x25519::Identity::from_str(word)
                    .map_err(|_| ErrorKind::Identity(format!("{}: not a valid age X25519 identity", at())))?;
                ids.push(id);
                continue;
            } else {
                return Err(ErrorKind::Identity(format!("{}: unknown identity type", at())));
            };
            return Err(ErrorKind::Identity(format!(
                "{}: {kind}, not supported by bootstrap",
                at()
            )));
        }
    }
    Ok(ids)
}

/// Splits a command line the way sops does with `shlex.Split`: words at
/// whitespace, single and double quotes, backslash escapes. `None` when a
/// quote is left open.
fn split_command(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\\' => word.get_or_insert_default().push(chars.next()?),
            '\'' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        c => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key() -> String {
        age::x25519::Identity::generate().to_string().expose_secret().to_owned()
    }

    #[test]
    fn config_dir_is_xdg_then_home() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(user_config_dir(s("/x"), s("/h")), Some(PathBuf::from("/x")));
        assert_eq!(user_config_dir(s(""), s("/h")), Some(PathBuf::from("/h/.config")));
        assert_eq!(
            user_config_dir(s("relative"), s("/h")),
            None,
            "Go refuses a relative XDG_CONFIG_HOME"
        );
        assert_eq!(user_config_dir(None, None), None);
    }

    #[test]
    fn every_present_source_contributes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.txt");
        std::fs::write(&file, format!("# comment\n{}\n", key())).unwrap();
        let cfg = dir.path().join("cfg");
        std::fs::create_dir_all(cfg.join("sops/age")).unwrap();
        std::fs::write(cfg.join("sops/age/keys.txt"), format!("{}\n", key())).unwrap();
        let sources = KeySources {
            age_key: Some(format!("{} {}", key(), key())),
            age_key_file: Some(file),
            age_key_cmd: None,
            config_dir: Some(cfg),
        };
        assert!(
            !format!("{sources:?}").contains("AGE-SECRET-KEY"),
            "Debug hides SOPS_AGE_KEY"
        );
        let ids = sources.load().unwrap();
        assert_eq!(ids.ids.len(), 4);
        assert_eq!(ids.searched.len(), 3);
    }

    #[test]
    fn bad_lines_are_named_without_their_content() {
        let secret = format!("{}x", key());
        let e = parse(&format!("{secret}\n"), "keys.txt", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("keys.txt line 1"), "{e}");
        assert!(!e.contains(&secret), "{e}");
        let e = parse("AGE-PLUGIN-YUBIKEY-1XYZ\n", "k", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("plugin"), "{e}");
    }

    #[test]
    fn the_command_gets_the_recipient() {
        let k = key();
        let sources = KeySources {
            age_key_cmd: Some(format!("sh -c 'test \"$SOPS_AGE_RECIPIENT\" = age1me && echo {k}'")),
            ..KeySources::default()
        };
        assert_eq!(sources.from_cmd("age1me").unwrap().len(), 1);
        let e = sources.from_cmd("age1other").err().unwrap();
        assert!(e.contains("exited"), "the command failed for another recipient: {e}");
        assert!(!e.contains(&k), "{e}");
        assert_eq!(
            split_command(r#"a 'b c' "d \"e\"" f\ g"#).unwrap(),
            ["a", "b c", "d \"e\"", "f g"]
        );
    }
}
