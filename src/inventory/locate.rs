//! Where each field of an inventory file is: a span index built from the
//! `toml_edit` syntax tree (which keeps byte spans), and byte offset → line and
//! column conversion. Parsing with `toml_edit` is used only for locations; the
//! model itself is deserialized by `toml`/serde.

use std::collections::BTreeMap;
use std::ops::Range;

use toml_edit::{Item, Table, Value};

/// Key span and value span of one entry.
type Spans = (Option<Range<usize>>, Option<Range<usize>>);

/// A 1-based line and column (in characters) in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub col: usize,
}

/// Spans of every key and value in one document, by index key (`cluster.0.name`).
#[derive(Debug, Default)]
pub struct SpanIndex {
    text: String,
    /// index key → (key span, value span)
    entries: BTreeMap<String, Spans>,
    /// index key of an array element → its `name` value, for readable paths.
    names: BTreeMap<String, String>,
}

impl SpanIndex {
    /// Indexes `text`; on a syntax error only line/column lookups work.
    pub fn build(text: &str) -> Self {
        let mut index = Self {
            text: text.to_owned(),
            ..Self::default()
        };
        if let Ok(doc) = toml_edit::Document::parse(text) {
            index.walk_table(doc.as_table(), "");
        }
        index
    }

    /// Location of the value at `key`, else of its key, else of the nearest
    /// ancestor that has one.
    pub fn locate(&self, key: &str) -> Option<LineCol> {
        let mut k = key.to_owned();
        loop {
            if let Some((kspan, vspan)) = self.entries.get(&k)
                && let Some(span) = vspan.as_ref().or(kspan.as_ref())
            {
                return Some(self.line_col(span.start));
            }
            match k.rfind('.') {
                Some(i) => k.truncate(i),
                None => return None,
            }
        }
    }

    /// Location of the key itself (for "unknown field" and "duplicate" errors).
    pub fn locate_key(&self, key: &str) -> Option<LineCol> {
        match self.entries.get(key) {
            Some((Some(span), _)) => Some(self.line_col(span.start)),
            _ => self.locate(key),
        }
    }

    /// The index key of the innermost entry whose key or value span contains `offset`.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        self.entries
            .iter()
            .flat_map(|(k, (ks, vs))| [ks, vs].into_iter().flatten().map(move |s| (k, s)))
            .filter(|(_, s)| s.start <= offset && offset < s.end.max(s.start + 1))
            .min_by_key(|(k, s)| (s.end - s.start, std::cmp::Reverse(k.len())))
            .map(|(k, _)| k.clone())
    }

    /// The `name` of the array element at index key `key`, if it has one.
    pub fn name_of(&self, key: &str) -> Option<String> {
        self.names.get(key).cloned()
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        LineCol {
            line,
            col: before[line_start..].chars().count() + 1,
        }
    }

    fn insert(&mut self, key: String, kspan: Option<Range<usize>>, vspan: Option<Range<usize>>) {
        self.entries.insert(key, (kspan, vspan));
    }

    fn walk_table(&mut self, table: &Table, prefix: &str) {
        for (k, item) in table.iter() {
            let key = join(prefix, k);
            let kspan = table.key(k).and_then(|k| k.span());
            self.walk_item(item, key, kspan);
        }
    }

    fn walk_item(&mut self, item: &Item, key: String, kspan: Option<Range<usize>>) {
        match item {
            Item::None => {}
            Item::Value(v) => self.walk_value(v, key, kspan),
            Item::Table(t) => {
                self.insert(key.clone(), kspan, t.span());
                self.walk_table(t, &key);
            }
            Item::ArrayOfTables(arr) => {
                self.insert(key.clone(), kspan, arr.span());
                for (i, t) in arr.iter().enumerate() {
                    let elem = format!("{key}.{i}");
                    self.insert(elem.clone(), None, t.span());
                    if let Some(name) = t.get("name").and_then(Item::as_str) {
                        self.names.insert(elem.clone(), name.to_owned());
                    }
                    self.walk_table(t, &elem);
                }
            }
        }
    }

    fn walk_value(&mut self, value: &Value, key: String, kspan: Option<Range<usize>>) {
        self.insert(key.clone(), kspan, value.span());
        match value {
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let kspan = t.key(k).and_then(|k| k.span());
                    self.walk_value(v, join(&key, k), kspan);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let elem = format!("{key}.{i}");
                    if let Some(name) = v.as_inline_table().and_then(|t| t.get("name")).and_then(Value::as_str) {
                        self.names.insert(elem.clone(), name.to_owned());
                    }
                    self.walk_value(v, elem, None);
                }
            }
            _ => {}
        }
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_owned()
    } else {
        format!("{prefix}.{k}")
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_array_fields() {
        let text = "[[cluster]]\nname = \"a\"\n[[cluster.node]]\nname = \"n1\"\nip   = \"1.2.3.4\"\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.locate("cluster.0.node.0.ip"), Some(LineCol { line: 5, col: 8 }));
        assert_eq!(idx.locate_key("cluster.0.node.0.ip"), Some(LineCol { line: 5, col: 1 }));
        assert_eq!(idx.name_of("cluster.0.node.0").as_deref(), Some("n1"));
        // A missing field falls back to its table.
        assert_eq!(idx.locate("cluster.0.node.0.mac"), Some(LineCol { line: 3, col: 1 }));
        let off = text.find("1.2.3.4").unwrap();
        assert_eq!(idx.key_at(off).as_deref(), Some("cluster.0.node.0.ip"));
    }
}
