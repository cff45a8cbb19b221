//! The document tree SOPS works on: maps keep their file order (the MAC is
//! taken in document order), lists their item order. Read from YAML and JSON
//! with serde through an order-keeping visitor, built by hand for dotenv/INI.
//! `Debug` never shows scalar values: after decryption they are plaintext.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One map: keys in file order.
pub type Branch = Vec<(String, Value)>;

/// A node of a SOPS document.
#[derive(Clone, PartialEq)]
pub enum Value {
    Map(Branch),
    List(Vec<Value>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Raw bytes (a decrypted `type:bytes` value).
    Bytes(Vec<u8>),
    Null,
}

impl Value {
    /// What kind of node this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Map(_) => "a map",
            Self::List(_) => "a list",
            Self::Null => "null",
            _ => "a value",
        }
    }

    /// The map entry `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(m) => f.debug_map().entries(m.iter().map(|(k, v)| (k, v))).finish(),
            Self::List(l) => f.debug_list().entries(l).finish(),
            Self::Null => f.write_str("null"),
            _ => f.write_str("***"),
        }
    }
}

/// A map key: SOPS walks only string keys (`sops.go` walkBranch: "Only string
/// keys are supported"), so anything else is refused while reading.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key (SOPS supports only string keys)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map, list, string, number, boolean or null")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    // An integer beyond int64 becomes a float, as the JSON store's
    // normalizeJSONNumber does (`stores/json/store.go`).
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some((Key(k), v)) = map.next_entry::<Key, Value>()? {
            out.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

/// Looks up a key path (`a.b.c`, list items by index: `list.0`) in the
/// decrypted branches. A map key that itself contains dots is matched whole
/// before the path is split further. `None` when the path is absent.
pub fn lookup<'a>(branches: &'a [Branch], path: &str) -> Option<&'a Value> {
    branches.iter().find_map(|b| lookup_in_branch(b, path))
}

fn lookup_in_branch<'a>(branch: &'a Branch, path: &str) -> Option<&'a Value> {
    if let Some((_, v)) = branch.iter().find(|(k, _)| k == path) {
        return Some(v);
    }
    branch.iter().find_map(|(k, v)| {
        let rest = path.strip_prefix(k.as_str())?.strip_prefix('.')?;
        lookup_in_value(v, rest)
    })
}

fn lookup_in_value<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    match value {
        Value::Map(m) => lookup_in_branch(m, path),
        Value::List(items) => {
            let (index, rest) = match path.split_once('.') {
                Some((i, rest)) => (i, Some(rest)),
                None => (path, None),
            };
            let item = items.get(index.parse::<usize>().ok()?)?;
            match rest {
                Some(rest) => lookup_in_value(item, rest),
                None => Some(item),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Branch {
        match yaml_serde::from_str::<Value>(yaml).unwrap() {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn keeps_file_order_and_types() {
        let b = doc("z: 1\na: [x, 2.5, true, null]\nm: {k: v}\n");
        let keys: Vec<&str> = b.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(b[0].1, Value::Int(1));
        assert_eq!(
            b[1].1,
            Value::List(vec![
                Value::Str("x".into()),
                Value::Float(2.5),
                Value::Bool(true),
                Value::Null
            ])
        );
        let json: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 18446744073709551615}}"#).unwrap();
        let Value::Map(m) = json else { panic!() };
        assert_eq!(m[0].0, "b");
        assert_eq!(m[1].1.get("y"), Some(&Value::Int(2)));
        assert_eq!(m[1].1.get("x"), Some(&Value::Float(18446744073709551615.0)));
    }

    #[test]
    fn refuses_non_string_keys() {
        assert!(yaml_serde::from_str::<Value>("1: a\n").is_err());
    }

    #[test]
    fn looks_up_dotted_paths_and_list_items() {
        let b = vec![doc("a: {b: {c: deep}}\nl: [{n: first}, second]\n\"x.y\": dotted\n")];
        assert_eq!(lookup(&b, "a.b.c"), Some(&Value::Str("deep".into())));
        assert_eq!(lookup(&b, "l.0.n"), Some(&Value::Str("first".into())));
        assert_eq!(lookup(&b, "l.1"), Some(&Value::Str("second".into())));
        assert_eq!(lookup(&b, "x.y"), Some(&Value::Str("dotted".into())));
        assert_eq!(lookup(&b, "a.b.d"), None);
        assert_eq!(lookup(&b, "l.2"), None);
    }

    #[test]
    fn debug_hides_scalars() {
        let b = Value::Map(doc("password: hunter2\n"));
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
