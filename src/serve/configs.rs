//! One-shot machine-config URLs: a random 256-bit token per node, good for one
//! successful fetch. Which nodes were served is kept in the state dir, so a
//! restarted `serve` refuses them too until they are re-provisioned
//! (`--reprovision NODE`). Config bodies never reach a log line.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use rand::RngCore;

/// Result of a config fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<'a> {
    /// The node's config, handed out now and never again.
    Config { node: &'a str, body: &'a str },
    /// The token is a node's, but its config was served already.
    Served(&'a str),
    /// No node has this token.
    Unknown,
}

/// The configs of one cluster's nodes and who has fetched theirs.
pub struct Configs {
    tokens: HashMap<String, String>,
    by_token: HashMap<String, String>,
    bodies: HashMap<String, String>,
    served: Mutex<BTreeSet<String>>,
    record: PathBuf,
}

impl Configs {
    /// `nodes`: (name, rendered machine config). `record` is the JSON list of
    /// served nodes; those in `reprovision` are taken off it first.
    pub fn new(nodes: Vec<(String, String)>, record: PathBuf, reprovision: &[String]) -> anyhow::Result<Self> {
        let mut served: BTreeSet<String> = match std::fs::read(&record) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{}: not a JSON list of node names", record.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", record.display())),
        };
        for n in reprovision {
            if !nodes.iter().any(|(name, _)| name == n) {
                anyhow::bail!("--reprovision {n}: no such node (with a MAC) in the cluster");
            }
            served.remove(n);
        }
        let mut tokens = HashMap::new();
        let mut by_token = HashMap::new();
        let mut bodies = HashMap::new();
        for (name, body) in nodes {
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let token = hex::encode(raw);
            by_token.insert(token.clone(), name.clone());
            tokens.insert(name.clone(), token);
            bodies.insert(name, body);
        }
        let c = Self {
            tokens,
            by_token,
            bodies,
            served: Mutex::new(served),
            record,
        };
        c.save()?;
        Ok(c)
    }

    /// The node's token (the last segment of its config URL).
    pub fn token(&self, node: &str) -> Option<&str> {
        self.tokens.get(node).map(String::as_str)
    }

    /// True once the node's config was fetched (and not re-provisioned since).
    pub fn is_served(&self, node: &str) -> bool {
        self.served.lock().expect("served set").contains(node)
    }

    /// Hands out the config for `token` once, recording it before returning.
    pub fn take(&self, token: &str) -> anyhow::Result<Take<'_>> {
        let Some((node, body)) = self
            .by_token
            .get_key_value(token)
            .and_then(|(_, n)| self.bodies.get_key_value(n))
        else {
            return Ok(Take::Unknown);
        };
        let mut served = self.served.lock().expect("served set");
        if !served.insert(node.clone()) {
            return Ok(Take::Served(node));
        }
        let json = serde_json::to_vec(&*served)?;
        drop(served);
        crate::fsutil::write_atomic(&self.record, &json, 0o644)
            .with_context(|| format!("recording the served config in {}", self.record.display()))?;
        Ok(Take::Config { node, body })
    }

    fn save(&self) -> anyhow::Result<()> {
        let json = serde_json::to_vec(&*self.served.lock().expect("served set"))?;
        if let Some(dir) = self.record.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::fsutil::write_atomic(&self.record, &json, 0o644)
            .with_context(|| format!("writing {}", self.record.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fetch_per_node_across_restarts_until_reprovisioned() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("served.json");
        let nodes = || {
            vec![
                ("cp-1".to_owned(), "secret: 1".to_owned()),
                ("w-1".to_owned(), "secret: 2".to_owned()),
            ]
        };
        let c = Configs::new(nodes(), record.clone(), &[]).unwrap();
        let t = c.token("cp-1").unwrap().to_owned();
        assert_eq!(t.len(), 64);
        assert_ne!(c.token("w-1").unwrap(), t);
        assert_eq!(c.take("nope").unwrap(), Take::Unknown);
        assert_eq!(
            c.take(&t).unwrap(),
            Take::Config {
                node: "cp-1",
                body: "secret: 1"
            }
        );
        assert_eq!(c.take(&t).unwrap(), Take::Served("cp-1"));
        assert!(c.is_served("cp-1") && !c.is_served("w-1"));

        let again = Configs::new(nodes(), record.clone(), &[]).unwrap();
        assert!(again.is_served("cp-1"), "a restart keeps the node served");
        let t2 = again.token("cp-1").unwrap().to_owned();
        assert_ne!(t2, t, "tokens are new per start");
        assert_eq!(again.take(&t2).unwrap(), Take::Served("cp-1"));

        let re = Configs::new(nodes(), record.clone(), &["cp-1".into()]).unwrap();
        assert!(!re.is_served("cp-1"));
        assert!(Configs::new(nodes(), record, &["nobody".into()]).is_err());
    }
}
