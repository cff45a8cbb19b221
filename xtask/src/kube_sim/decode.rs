//! Request bodies as kube-apiserver's strict decoder reads them: JSON or YAML
//! into a value, noting duplicate fields with their paths (sigs.k8s.io/json
//! reports `duplicate field "spec.paused"`), and the `fieldValidation` directive.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `fieldValidation`: what to do with unknown and duplicate fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// 400 BadRequest listing them.
    Strict,
    /// Accept, drop unknown fields, one `Warning` header each.
    Warn,
    /// Accept and drop silently.
    Ignore,
}

impl FieldValidation {
    /// From the query; absent or empty is `Warn`, the server default since the
    /// feature went GA (k8s.io/apiserver/pkg/endpoints/handlers/rest.go `fieldValidation`).
    /// kubectl sends `Strict` itself (`--validate=strict` is its default).
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            // metav1 validation.ValidateFieldValidation, returned as BadRequest.
            Some(other) => Err(format!(
                "fieldValidation: Unsupported value: {}: supported values: \"Ignore\", \"Warn\", \"Strict\"",
                super::field::go_quote(other)
            )),
        }
    }
}

/// A decoded body and the paths of the fields it repeated, in document order.
#[derive(Debug)]
pub struct Decoded {
    pub value: Value,
    pub duplicates: Vec<String>,
}

/// Parses JSON (or YAML: JSON is YAML, and the apply content type allows either), keeping the last of repeated keys.
pub fn parse(body: &[u8]) -> Result<Decoded, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{' | b'[')) {
        let mut duplicates = vec![];
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = Tracked {
            path: String::new(),
            dups: &mut duplicates,
        }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
        if let Ok(value) = parsed {
            return Ok(Decoded { value, duplicates });
        }
        // Not JSON after all (a YAML flow mapping such as `{a: b}`): read it as YAML.
    }
    let mut duplicates = vec![];
    let value = Tracked {
        path: String::new(),
        dups: &mut duplicates,
    }
    .deserialize(yaml_serde::Deserializer::from_slice(body))
    .map_err(|e| format!("the request body is not valid YAML or JSON: {e}"))?;
    Ok(Decoded { value, duplicates })
}

/// Builds a `Value` while recording repeated keys under `path`.
struct Tracked<'a> {
    path: String,
    dups: &'a mut Vec<String>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> DeserializeSeed<'de> for Tracked<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tracked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = vec![];
        while let Some(v) = seq.next_element_seed(Tracked {
            path: format!("{}[{}]", self.path, out.len()),
            dups: &mut *self.dups,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<KeyString>()? {
            let key = key.0;
            let path = child(&self.path, &key);
            if !seen.insert(key.clone()) {
                self.dups.push(path.clone());
            }
            let v = map.next_value_seed(Tracked {
                path,
                dups: &mut *self.dups,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A map key; YAML allows scalars that are not strings (`1: a`), which JSON objects stringify.
struct KeyString(String);

impl<'de> serde::Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K;
        impl Visitor<'_> for K {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyString, E> {
                Ok(KeyString("null".into()))
            }
        }
        d.deserialize_any(K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_reported_with_their_paths_and_the_last_value_wins() {
        let d = parse(
            br#"{"metadata":{"name":"a","name":"b"},"spec":{"paused":true,"paused":false,
                "template":{"spec":{"containers":[{"name":"c","imagePullPolicy":"Always","imagePullPolicy":"Never"}]}}}}"#,
        )
        .unwrap();
        assert_eq!(
            d.duplicates,
            [
                "metadata.name",
                "spec.paused",
                "spec.template.spec.containers[0].imagePullPolicy"
            ]
        );
        assert_eq!(d.value["metadata"]["name"], "b");
        assert_eq!(d.value["spec"]["paused"], false);
    }

    #[test]
    fn yaml_flow_mappings_are_not_mistaken_for_json() {
        let d = parse(b"{kind: ConfigMap, data: {a: '1'}}").unwrap();
        assert_eq!(d.value["data"]["a"], "1");
        assert!(parse(b"{\"a\": [}").unwrap_err().contains("not valid YAML or JSON"));
    }

    #[test]
    fn yaml_bodies_are_tracked_too() {
        let d = parse(b"kind: ConfigMap\ndata:\n  a: '1'\n  a: '2'\n").unwrap();
        assert_eq!(d.duplicates, ["data.a"]);
        assert_eq!(d.value["data"]["a"], "2");
    }

    #[test]
    fn field_validation_defaults_to_warn_and_refuses_unknown_directives() {
        let q = |v: &str| HashMap::from([("fieldValidation".to_owned(), v.to_owned())]);
        assert_eq!(FieldValidation::from_query(&HashMap::new()), Ok(FieldValidation::Warn));
        assert_eq!(FieldValidation::from_query(&q("Strict")), Ok(FieldValidation::Strict));
        assert!(
            FieldValidation::from_query(&q("strict"))
                .unwrap_err()
                .contains("Unsupported value")
        );
    }
}
