//! Field paths such as `cluster "infra" > node "cp-2" > ip`, and their keys in
//! the span index (`cluster.0.node.1.ip`).

use std::fmt;

/// One step of a path: a table key, or an element of an array of tables
/// (labelled by its `name` when it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Elem { index: usize, label: Option<String> },
}

/// A path to a field of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by an array element with an optional display name.
    pub fn elem(&self, index: usize, label: Option<&str>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Elem {
            index,
            label: label.map(str::to_owned),
        });
        Self(segs)
    }

    /// The key used in the span index: `cluster.0.node.1.ip`.
    pub fn index_key(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Elem { index, .. } => index.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The parent path (the root is its own parent).
    pub fn parent(&self) -> Self {
        let mut segs = self.0.clone();
        segs.pop();
        Self(segs)
    }

    /// True at the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Rebuilds a path from an index key, labelling elements with `label`.
    pub fn from_index_key(key: &str, label: impl Fn(&str) -> Option<String>) -> Self {
        let mut path = Self::root();
        for part in key.split('.').filter(|p| !p.is_empty()) {
            path = match part.parse::<usize>() {
                Ok(i) => {
                    let l = label(&format!("{}.{}", path.index_key(), i));
                    path.elem(i, l.as_deref())
                }
                Err(_) => path.key(part),
            };
        }
        path
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        let mut first = true;
        let mut iter = self.0.iter().peekable();
        while let Some(seg) = iter.next() {
            if let Seg::Key(k) = seg {
                if !first {
                    f.write_str(" > ")?;
                }
                first = false;
                f.write_str(k)?;
                if let Some(Seg::Elem { index, label }) = iter.peek() {
                    match label {
                        Some(l) => write!(f, " \"{l}\"")?,
                        None => write!(f, " #{}", index + 1)?,
                    }
                    iter.next();
                }
            } else if let Seg::Elem { index, .. } = seg {
                if !first {
                    f.write_str(" > ")?;
                }
                first = false;
                write!(f, "#{}", index + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_names_and_indexes() {
        let p = FieldPath::root()
            .key("cluster")
            .elem(0, Some("infra"))
            .key("node")
            .elem(2, None)
            .key("ip");
        assert_eq!(p.to_string(), "cluster \"infra\" > node #3 > ip");
        assert_eq!(p.index_key(), "cluster.0.node.2.ip");
        assert_eq!(p.parent().index_key(), "cluster.0.node.2");
    }
}
