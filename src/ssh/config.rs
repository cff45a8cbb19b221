//! `~/.ssh/config` as OpenSSH reads it (ssh_config(5)), for the keywords the
//! transport uses: `Host` and `Match` blocks, `Include`, `HostName`, `User`,
//! `Port`, `IdentityFile`, `CertificateFile`, `IdentitiesOnly`, `ProxyJump`,
//! `ProxyCommand`. Other keywords are ignored, as unknown ones are by
//! `IgnoreUnknown`-style configs.
//!
//! Semantics followed: the first value obtained for a keyword wins
//! (`IdentityFile` and `CertificateFile` accumulate); `ProxyJump` and
//! `ProxyCommand` compete, the first of either wins; `Include` takes globs,
//! relative paths are relative to the directory of the top-level file (`~/.ssh`
//! for the user's config), includes nest up to 16 deep and an include inside a
//! block applies only when that block matches. `Match` supports `all`, `host`,
//! `originalhost` (comma-separated pattern lists, `!` negation of a criterion);
//! `Match host` sees the `HostName` obtained so far, as in OpenSSH. The other
//! criteria (`exec`, `user`, `localuser`, `canonical`, `final`, ...) are an
//! error naming the file and line when evaluated, never silently skipped.
//!
//! Hand-written: russh-config reads only the first exactly-named `Host` block
//! (no globs, no `Include`, no `Match`, last value wins), and ssh2-config
//! ignores `ProxyCommand`/`ProxyJump`/`IdentitiesOnly`, has no `Match` and
//! reports no file/line; neither evaluates blocks in file order as OpenSSH does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::known_hosts::match_pattern_list;

/// OpenSSH's `READCONF_MAX_DEPTH`.
const MAX_INCLUDE_DEPTH: usize = 16;

/// How the connection reaches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump none` / `ProxyCommand none`: connect directly.
    None,
    /// `ProxyJump` hops, `[user@]host[:port]`, first hop first.
    Jump(Vec<String>),
    /// `ProxyCommand`, tokens (`%h %p %r %n %%`) already expanded.
    Command(String),
}

/// Settings for one host after applying the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub certificate_files: Vec<PathBuf>,
    pub identities_only: Option<bool>,
    pub proxy: Option<Proxy>,
}

/// A config error, naming the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} in {}:{line}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
}

/// What the caller already knows (inventory values beat the config, like
/// OpenSSH's command-line options), and the defaults for tokens.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// The host as given (what `Host` patterns match).
    pub host: &'a str,
    pub port: Option<u16>,
    pub user: Option<&'a str>,
    /// The user when neither the caller nor the config names one.
    pub default_user: &'a str,
}

#[derive(Debug, Clone)]
struct Loc {
    file: Arc<PathBuf>,
    line: usize,
}

impl Loc {
    fn err(&self, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.as_ref().clone(),
            line: self.line,
            msg: msg.into(),
        }
    }
}

#[derive(Debug, Clone)]
enum Criterion {
    All,
    /// `host` (after HostName) or `originalhost` (as given).
    Host {
        original: bool,
        negate: bool,
        patterns: Vec<String>,
    },
    /// A criterion OpenSSH knows that we do not evaluate.
    Unsupported(String),
}

#[derive(Debug, Clone)]
enum Cond {
    Host(Vec<String>),
    Match(Vec<Criterion>),
}

#[derive(Debug, Clone)]
enum Item {
    /// A `Host`/`Match` line; `parents` are the blocks an `Include` sits in.
    Block {
        id: usize,
        parents: Vec<usize>,
        cond: Cond,
        at: Loc,
    },
    /// A setting, applying when every block in `conds` matched.
    Set {
        conds: Vec<usize>,
        key: String,
        args: Vec<String>,
        /// The text after the keyword (ProxyCommand takes it whole).
        raw: String,
        at: Loc,
    },
}

/// A parsed ssh config file with its includes.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    items: Vec<Item>,
    blocks: usize,
}

impl SshConfig {
    /// Reads a config file and its includes; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut cfg = Self::default();
        match std::fs::read_to_string(path) {
            Ok(text) => cfg.read(&text, Arc::new(path.to_path_buf()), &base, &[], 0)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    line: 0,
                    msg: format!("cannot read: {e}"),
                });
            }
        }
        Ok(cfg)
    }

    /// Parses config text (includes relative to `base`); `file` names it in errors.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        cfg.read(text, Arc::new(file.to_path_buf()), base, &[], 0)?;
        Ok(cfg)
    }

    fn read(
        &mut self,
        text: &str,
        file: Arc<PathBuf>,
        base: &Path,
        parents: &[usize],
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut current: Option<usize> = None;
        for (n, raw_line) in text.lines().enumerate() {
            let at = Loc {
                file: file.clone(),
                line: n + 1,
            };
            let Some((key, raw)) = split_keyword(raw_line) else {
                continue;
            };
            let args = if key == "proxycommand" {
                Vec::new()
            } else {
                tokenize(raw).map_err(|m| at.err(m))?
            };
            let conds: Vec<usize> = parents.iter().copied().chain(current).collect();
            match key.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(at.err("`Host` needs at least one pattern"));
                    }
                    current = Some(self.push_block(parents, Cond::Host(args), at));
                }
                "match" => {
                    let cond = Cond::Match(parse_match(&args, &at)?);
                    current = Some(self.push_block(parents, cond, at));
                }
                "include" => {
                    if args.is_empty() {
                        return Err(at.err("`Include` needs a file name"));
                    }
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(at.err(format!("`Include` nested more than {MAX_INCLUDE_DEPTH} deep")));
                    }
                    for pattern in &args {
                        for path in include_paths(pattern, base, &at)? {
                            let text = std::fs::read_to_string(&path)
                                .map_err(|e| at.err(format!("cannot read included {}: {e}", path.display())))?;
                            self.read(&text, Arc::new(path), base, &conds, depth + 1)?;
                        }
                    }
                }
                _ => {
                    if key == "port"
                        && let Some(p) = args.first()
                        && p.parse::<u16>().is_err()
                    {
                        return Err(at.err(format!("`Port {p}` is not a port number")));
                    }
                    if args.is_empty() && raw.trim().is_empty() {
                        return Err(at.err(format!("`{key}` needs a value")));
                    }
                    self.items.push(Item::Set {
                        conds,
                        key,
                        args,
                        raw: raw.trim().to_owned(),
                        at,
                    });
                }
            }
        }
        Ok(())
    }

    fn push_block(&mut self, parents: &[usize], cond: Cond, at: Loc) -> usize {
        let id = self.blocks;
        self.blocks += 1;
        self.items.push(Item::Block {
            id,
            parents: parents.to_vec(),
            cond,
            at,
        });
        id
    }

    /// The settings that apply to `q.host`, evaluated in file order.
    pub fn resolve(&self, q: &Query) -> Result<HostConfig, ConfigError> {
        let mut c = HostConfig::default();
        let mut active = vec![false; self.blocks];
        let mut identity: Vec<(String, Loc)> = Vec::new();
        let mut certs: Vec<(String, Loc)> = Vec::new();
        let mut proxy_command: Option<(String, Loc)> = None;
        for item in &self.items {
            match item {
                Item::Block { id, parents, cond, at } => {
                    active[*id] = parents.iter().all(|p| active[*p])
                        && match cond {
                            Cond::Host(p) => match_pattern_list(p.iter().map(String::as_str), q.host),
                            Cond::Match(crit) => {
                                let host = c.hostname.as_deref().unwrap_or(q.host);
                                eval_match(crit, host, q.host, at)?
                            }
                        };
                }
                Item::Set {
                    conds,
                    key,
                    args,
                    raw,
                    at,
                } => {
                    if !conds.iter().all(|b| active[*b]) {
                        continue;
                    }
                    let first = args.first().cloned().unwrap_or_default();
                    match key.as_str() {
                        "hostname" if c.hostname.is_none() => {
                            c.hostname = Some(expand(&first, &[('h', q.host)], at)?);
                        }
                        "user" if c.user.is_none() => c.user = Some(first),
                        "port" if c.port.is_none() => c.port = first.parse().ok(),
                        "identityfile" => identity.push((first, at.clone())),
                        "certificatefile" => certs.push((first, at.clone())),
                        "identitiesonly" if c.identities_only.is_none() => c.identities_only = Some(first == "yes"),
                        "proxyjump" if c.proxy.is_none() => {
                            c.proxy = Some(if first == "none" {
                                Proxy::None
                            } else {
                                Proxy::Jump(first.split(',').map(|s| s.trim().to_owned()).collect())
                            })
                        }
                        "proxycommand" if c.proxy.is_none() => {
                            if raw == "none" {
                                c.proxy = Some(Proxy::None);
                            } else {
                                c.proxy = Some(Proxy::Command(String::new()));
                                proxy_command = Some((raw.clone(), at.clone()));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Command-line values (here: the inventory's) beat the config, as in OpenSSH.
        if let Some(p) = q.port {
            c.port = Some(p);
        }
        if let Some(u) = q.user {
            c.user = Some(u.to_owned());
        }
        let port = c.port.unwrap_or(22).to_string();
        let home = std::env::var("HOME").unwrap_or_default();
        let host = c.hostname.clone().unwrap_or_else(|| q.host.to_owned());
        let user = c.user.clone().unwrap_or_else(|| q.default_user.to_owned());
        let tokens = [
            ('h', host.as_str()),
            ('n', q.host),
            ('p', port.as_str()),
            ('r', user.as_str()),
            ('d', home.as_str()),
        ];
        for (raw, at) in identity {
            c.identity_files.push(expand_home(&expand(&raw, &tokens, &at)?));
        }
        for (raw, at) in certs {
            c.certificate_files.push(expand_home(&expand(&raw, &tokens, &at)?));
        }
        if let Some((raw, at)) = proxy_command {
            c.proxy = Some(Proxy::Command(expand(&raw, &tokens, &at)?));
        }
        Ok(c)
    }
}

/// `keyword value`, `keyword=value` or `keyword = value`; `None` for blank
/// lines and comments. The keyword comes back lower-case.
fn split_keyword(line: &str) -> Option<(String, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some((key.to_ascii_lowercase(), rest))
}

/// Splits arguments on whitespace, honouring double and single quotes; an
/// unquoted `#` starting an argument ends the line (a trailing comment).
fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(out),
            _ => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&ch) = chars.peek() {
            match quote {
                Some(q) if ch == q => quote = None,
                Some(_) => arg.push(ch),
                None if ch == '"' || ch == '\'' => quote = Some(ch),
                None if ch.is_whitespace() => break,
                None => arg.push(ch),
            }
            chars.next();
        }
        if let Some(q) = quote {
            return Err(format!("unterminated {q}quote"));
        }
        out.push(arg);
    }
}

fn parse_match(args: &[String], at: &Loc) -> Result<Vec<Criterion>, ConfigError> {
    if args.is_empty() {
        return Err(at.err("`Match` needs a criterion"));
    }
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(word) = it.next() {
        let (negate, name) = match word.strip_prefix('!') {
            Some(n) => (true, n.to_ascii_lowercase()),
            None => (false, word.to_ascii_lowercase()),
        };
        match name.as_str() {
            "all" => {
                if args.len() > 1 && !(args.len() == 2 && args[0].eq_ignore_ascii_case("canonical")) {
                    return Err(at.err("`Match all` cannot be combined with other criteria"));
                }
                out.push(Criterion::All);
            }
            "host" | "originalhost" => {
                let Some(list) = it.next() else {
                    return Err(at.err(format!("`Match {name}` needs a pattern list")));
                };
                out.push(Criterion::Host {
                    original: name == "originalhost",
                    negate,
                    patterns: list.split(',').map(str::to_owned).collect(),
                });
            }
            "canonical" | "final" => out.push(Criterion::Unsupported(name)),
            "exec" | "user" | "localuser" | "localnetwork" | "tagged" | "command" | "version" | "sessiontype" => {
                if it.next().is_none() {
                    return Err(at.err(format!("`Match {name}` needs an argument")));
                }
                out.push(Criterion::Unsupported(name));
            }
            other => return Err(at.err(format!("unknown Match criterion `{other}`"))),
        }
    }
    Ok(out)
}

/// Evaluates a `Match` line left to right; a criterion we do not support is
/// an error once reached (as in OpenSSH, a failed criterion skips the rest).
fn eval_match(crit: &[Criterion], host: &str, original: &str, at: &Loc) -> Result<bool, ConfigError> {
    for c in crit {
        let ok = match c {
            Criterion::All => true,
            Criterion::Host {
                original: o,
                negate,
                patterns,
            } => {
                let name = if *o { original } else { host };
                match_pattern_list(patterns.iter().map(String::as_str), name) != *negate
            }
            Criterion::Unsupported(name) => {
                return Err(at.err(format!(
                    "unsupported Match criterion `{name}` (bootstrap evaluates `host`, `originalhost` and `all`)"
                )));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The files an `Include` pattern names, sorted as glob(3) returns them;
/// none is not an error (as in OpenSSH).
fn include_paths(pattern: &str, base: &Path, at: &Loc) -> Result<Vec<PathBuf>, ConfigError> {
    let p = expand_home(pattern);
    let p = if p.is_absolute() { p } else { base.join(p) };
    let text = p
        .to_str()
        .ok_or_else(|| at.err(format!("`Include {pattern}`: not UTF-8")))?;
    let mut paths: Vec<PathBuf> = glob::glob(text)
        .map_err(|e| at.err(format!("`Include {pattern}`: {e}")))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// Replaces `%x` tokens from `tokens` and `%%`; an unknown token is an error.
fn expand(s: &str, tokens: &[(char, &str)], at: &Loc) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match tokens.iter().find(|(k, _)| *k == t) {
                Some((_, v)) => out.push_str(v),
                None => return Err(at.err(format!("unsupported token `%{t}` in `{s}`"))),
            },
            None => return Err(at.err(format!("`%` at the end of `{s}`"))),
        }
    }
    Ok(out)
}

/// Expands a leading `~/` to `$HOME`.
pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proxy::None => f.write_str("none"),
            Proxy::Jump(h) => write!(f, "ProxyJump {}", h.join(",")),
            Proxy::Command(c) => write!(f, "ProxyCommand {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SshConfig {
        SshConfig::parse(text, Path::new("/cfg"), Path::new("/nonexistent")).unwrap()
    }

    fn q(host: &str) -> Query<'_> {
        Query {
            host,
            default_user: "root",
            ..Default::default()
        }
    }

    #[test]
    fn first_value_wins_and_patterns_match() {
        let cfg = parse(
            "# comment\nHost bastion\n  HostName 198.18.0.11\n  User ops\nHost node-* !node-9\n  User admin\n  Port 2222\n  IdentityFile /keys/a\n  IdentitiesOnly yes\n  ProxyJump bastion\nMatch all\n  User nobody\nHost *\n  User root\n  Port=22\n  IdentityFile /keys/b\n",
        );
        let n = cfg.resolve(&q("node-1")).unwrap();
        assert_eq!(n.user.as_deref(), Some("admin"));
        assert_eq!(n.port, Some(2222));
        assert_eq!(
            n.identity_files,
            vec![PathBuf::from("/keys/a"), PathBuf::from("/keys/b")]
        );
        assert_eq!(n.identities_only, Some(true));
        assert_eq!(n.proxy, Some(Proxy::Jump(vec!["bastion".to_owned()])));
        let nine = cfg.resolve(&q("node-9")).unwrap();
        assert_eq!(nine.user.as_deref(), Some("nobody"), "Match all applies before Host *");
        assert_eq!(nine.proxy, None);
        let b = cfg.resolve(&q("bastion")).unwrap();
        assert_eq!(b.hostname.as_deref(), Some("198.18.0.11"));
        // Caller values (the inventory) beat the config.
        let mut over = q("node-1");
        over.port = Some(2200);
        over.user = Some("me");
        let o = cfg.resolve(&over).unwrap();
        assert_eq!((o.port, o.user.as_deref()), (Some(2200), Some("me")));
    }

    #[test]
    fn match_host_sees_hostname_and_originalhost_the_given_name() {
        let cfg = parse(
            "Host web\n  HostName 10.1.2.3\nMatch host 10.1.*\n  User via-hostname\nMatch originalhost web\n  Port 2022\nMatch !host 10.1.*\n  User other\n",
        );
        let w = cfg.resolve(&q("web")).unwrap();
        assert_eq!(w.user.as_deref(), Some("via-hostname"));
        assert_eq!(w.port, Some(2022));
        let o = cfg.resolve(&q("db")).unwrap();
        assert_eq!((o.user.as_deref(), o.port), (Some("other"), None));
        // Criteria on one line all have to hold; comma lists are alternatives.
        let cfg = parse("Match host a,b originalhost b\n  User both\n");
        assert_eq!(cfg.resolve(&q("b")).unwrap().user.as_deref(), Some("both"));
        assert_eq!(cfg.resolve(&q("a")).unwrap().user, None);
    }

    #[test]
    fn unsupported_match_criteria_are_errors_with_file_and_line() {
        for crit in ["exec \"true\"", "user bob", "localuser bob", "canonical", "final"] {
            let cfg = parse(&format!("Host x\n  User u\nMatch {crit}\n  User v\n"));
            let e = cfg.resolve(&q("x")).unwrap_err();
            let word = crit.split_whitespace().next().unwrap();
            assert_eq!(
                e.to_string(),
                format!(
                    "unsupported Match criterion `{word}` (bootstrap evaluates `host`, `originalhost` and `all`) in /cfg:3"
                )
            );
        }
        // A failed criterion before it skips the rest, as OpenSSH skips `exec`.
        let cfg = parse("Match host other exec \"false\"\n  User v\n");
        assert_eq!(cfg.resolve(&q("x")).unwrap().user, None);
        let e = SshConfig::parse("\n\nMatch hots x\n", Path::new("/cfg"), Path::new("/")).unwrap_err();
        assert_eq!(e.to_string(), "unknown Match criterion `hots` in /cfg:3");
        let e = SshConfig::parse("Port twenty\n", Path::new("/cfg"), Path::new("/")).unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn proxy_command_tokens_none_and_competition_with_proxy_jump() {
        let cfg = parse(
            "Host direct\n  ProxyCommand none\nHost cmd-*\n  HostName %h.lan\n  User ops\n  ProxyCommand ssh -W %h:%p -l %r gw # not a comment: the rest of the line is the command\nHost *\n  ProxyJump gw\n  ProxyCommand nc %h %p\n",
        );
        let c = cfg.resolve(&q("cmd-1")).unwrap();
        assert_eq!(
            c.proxy,
            Some(Proxy::Command(
                "ssh -W cmd-1.lan:22 -l ops gw # not a comment: the rest of the line is the command".into()
            ))
        );
        assert_eq!(cfg.resolve(&q("direct")).unwrap().proxy, Some(Proxy::None));
        assert_eq!(
            cfg.resolve(&q("other")).unwrap().proxy,
            Some(Proxy::Jump(vec!["gw".into()]))
        );
        let cfg = parse("ProxyCommand nc %h %p %r %n %%\n");
        let mut query = q("alias");
        query.port = Some(2200);
        assert_eq!(
            cfg.resolve(&query).unwrap().proxy,
            Some(Proxy::Command("nc alias 2200 root alias %".into()))
        );
        let e = parse("ProxyCommand nc %h %Z\n").resolve(&q("a")).unwrap_err();
        assert!(e.to_string().contains("`%Z`") && e.line == 1, "{e}");
    }

    #[test]
    fn include_globs_relative_recursive_and_inside_blocks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("conf.d")).unwrap();
        std::fs::write(d.path().join("conf.d/20-b.conf"), "Host *\n  User from-b\n").unwrap();
        std::fs::write(
            d.path().join("conf.d/10-a.conf"),
            "Host a\n  Port 2001\n  Include nested\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("nested"),
            "CertificateFile /c/%h-cert.pub\nIdentityFile /k/%r\n",
        )
        .unwrap();
        std::fs::write(d.path().join("only-web"), "User web-user\nHost *\n  Port 8022\n").unwrap();
        let top = d.path().join("config");
        std::fs::write(
            &top,
            "Host web\n  Include only-web\nHost *\n  Include conf.d/*.conf missing-is-fine\nHost *\n  User last\n",
        )
        .unwrap();
        let cfg = SshConfig::load(&top).unwrap();
        let a = cfg.resolve(&q("a")).unwrap();
        assert_eq!(a.port, Some(2001));
        assert_eq!(
            a.user.as_deref(),
            Some("from-b"),
            "10-a before 20-b, both before `Host *` of the top file"
        );
        assert_eq!(a.certificate_files, vec![PathBuf::from("/c/a-cert.pub")]);
        assert_eq!(a.identity_files, vec![PathBuf::from("/k/from-b")]);
        // An include inside a block applies only to that block's hosts, its own `Host *` too.
        let w = cfg.resolve(&q("web")).unwrap();
        assert_eq!((w.user.as_deref(), w.port), (Some("web-user"), Some(8022)));
        let b = cfg.resolve(&q("b")).unwrap();
        assert_eq!((b.user.as_deref(), b.port), (Some("from-b"), None));
        assert!(b.certificate_files.is_empty());
        // Includes that loop are stopped with the file and line.
        std::fs::write(d.path().join("loop"), "Include loop\n").unwrap();
        let e = SshConfig::parse("Include loop\n", &top, d.path()).unwrap_err();
        assert!(e.to_string().contains("nested more than 16 deep"), "{e}");
        assert!(e.file.ends_with("loop"), "{e}");
        // A missing top-level file is an empty config.
        assert!(SshConfig::load(&d.path().join("none")).unwrap().items.is_empty());
    }

    #[test]
    fn quotes_comments_and_equals() {
        let cfg =
            parse("Host \"a b\" c # trailing\n  IdentityFile \"/keys/with space\" # comment\n  User=\"quoted\"\n");
        let c = cfg.resolve(&q("c")).unwrap();
        assert_eq!(c.identity_files, vec![PathBuf::from("/keys/with space")]);
        assert_eq!(c.user.as_deref(), Some("quoted"));
        assert!(SshConfig::parse("User \"open\n", Path::new("/cfg"), Path::new("/")).is_err());
    }
}
