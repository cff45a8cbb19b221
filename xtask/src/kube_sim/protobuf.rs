//! Decoding of Kubernetes protobuf request bodies for the kinds client-go's
//! typed clients create with generators (`kubectl create namespace|configmap|
//! secret|serviceaccount`): those clients always send protobuf for built-in
//! kinds, and client-go falls back to JSON after a 415 only for CBOR
//! (kubernetes/client-go `rest/client.go`, `requestClientContentConfigProvider`).
//!
//! Wire format: kubernetes/apimachinery `pkg/runtime/serializer/protobuf`
//! (the 4-byte prefix `k8s\0`, then a `runtime.Unknown` whose `raw` is the
//! object's message); field numbers from kubernetes/api `core/v1/generated.proto`
//! and apimachinery `pkg/apis/meta/v1/generated.proto` and `pkg/runtime/generated.proto`
//! (v0.34). Go's protobuf marshalling writes empty strings, zeros and false for
//! non-pointer fields where JSON omits them (`omitempty`), so those are dropped;
//! `metav1.Time` is its seconds (an empty message is the zero time). A field
//! this subset does not model is an error, never silently dropped.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::store::rfc3339;

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    MapStr,
    MapBytes,
    Msg(&'static str),
}

/// (field number, JSON name, type, repeated)
type Field = (u32, &'static str, Ty, bool);

fn fields(message: &str) -> Option<&'static [Field]> {
    use Ty::*;
    Some(match message {
        "ObjectMeta" => &[
            (1, "name", Str, false),
            (2, "generateName", Str, false),
            (3, "namespace", Str, false),
            (4, "selfLink", Str, false),
            (5, "uid", Str, false),
            (6, "resourceVersion", Str, false),
            (7, "generation", Int, false),
            (8, "creationTimestamp", Time, false),
            (9, "deletionTimestamp", Time, false),
            (10, "deletionGracePeriodSeconds", Int, false),
            (11, "labels", MapStr, false),
            (12, "annotations", MapStr, false),
            (13, "ownerReferences", Msg("OwnerReference"), true),
            (14, "finalizers", Str, true),
        ],
        "OwnerReference" => &[
            (1, "kind", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
            (5, "apiVersion", Str, false),
            (6, "controller", Bool, false),
            (7, "blockOwnerDeletion", Bool, false),
        ],
        "Namespace" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("NamespaceSpec"), false),
            (3, "status", Msg("NamespaceStatus"), false),
        ],
        "NamespaceSpec" => &[(1, "finalizers", Str, true)],
        "NamespaceStatus" => &[(1, "phase", Str, false)],
        "ConfigMap" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "data", MapStr, false),
            (3, "binaryData", MapBytes, false),
            (4, "immutable", Bool, false),
        ],
        "Secret" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "data", MapBytes, false),
            (3, "type", Str, false),
            (4, "stringData", MapStr, false),
            (5, "immutable", Bool, false),
        ],
        "ServiceAccount" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "secrets", Msg("ObjectReference"), true),
            (3, "imagePullSecrets", Msg("LocalObjectReference"), true),
            (4, "automountServiceAccountToken", Bool, false),
        ],
        "ObjectReference" => &[
            (1, "kind", Str, false),
            (2, "namespace", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
            (5, "apiVersion", Str, false),
            (6, "resourceVersion", Str, false),
            (7, "fieldPath", Str, false),
        ],
        "LocalObjectReference" => &[(1, "name", Str, false)],
        "Unknown" => &[
            (1, "typeMeta", Msg("TypeMeta"), false),
            (2, "raw", Bytes, false),
            (3, "contentEncoding", Str, false),
            (4, "contentType", Str, false),
        ],
        "TypeMeta" => &[(1, "apiVersion", Str, false), (2, "kind", Str, false)],
        _ => return None,
    })
}

/// Whether bodies of this kind (core/v1) can be decoded.
pub fn supported(group: &str, kind: &str) -> bool {
    group.is_empty() && matches!(kind, "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount")
}

/// One decoded wire value.
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let num = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                if n > self.0.len() {
                    return Err("truncated field".into());
                }
                let (b, rest) = self.0.split_at(n);
                self.0 = rest;
                Wire::Len(b)
            }
            w => return Err(format!("unexpected wire type {w} for field {num}")),
        };
        Ok(Some((num, wire)))
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".into())
}

fn map_entry(b: &[u8], bytes: bool) -> Result<(String, Value), String> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    let mut r = Reader(b);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Len(b)) => k = string(b)?,
            (2, Wire::Len(b)) if bytes => v = json!(base64::engine::general_purpose::STANDARD.encode(b)),
            (2, Wire::Len(b)) => v = json!(string(b)?),
            _ => return Err("malformed map entry".into()),
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, String> {
    if b.is_empty() {
        return Ok(Value::Null);
    }
    let mut r = Reader(b);
    let mut secs = 0i64;
    while let Some((n, w)) = r.next()? {
        if let (1, Wire::Varint(v)) = (n, w) {
            secs = v as i64;
        }
    }
    Ok(json!(rfc3339(secs)))
}

fn message(name: &str, b: &[u8]) -> Result<Map<String, Value>, String> {
    let table = fields(name).ok_or_else(|| format!("{name} is not modelled"))?;
    let mut out = Map::new();
    let mut r = Reader(b);
    while let Some((num, wire)) = r.next()? {
        let &(_, json_name, ty, repeated) = table
            .iter()
            .find(|f| f.0 == num)
            .ok_or_else(|| format!("field {num} of {name} is not modelled by the simulator"))?;
        let value = match (ty, wire) {
            (Ty::Str, Wire::Len(b)) => json!(string(b)?),
            (Ty::Bytes, Wire::Len(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            (Ty::Int, Wire::Varint(v)) => json!(v as i64),
            (Ty::Bool, Wire::Varint(v)) => json!(v != 0),
            (Ty::Time, Wire::Len(b)) => time(b)?,
            (Ty::MapStr | Ty::MapBytes, Wire::Len(b)) => {
                let (k, v) = map_entry(b, matches!(ty, Ty::MapBytes))?;
                let m = out.entry(json_name).or_insert_with(|| json!({}));
                m[k] = v;
                continue;
            }
            (Ty::Msg(m), Wire::Len(b)) => Value::Object(message(m, b)?),
            _ => return Err(format!("field {json_name} of {name} has the wrong wire type")),
        };
        if repeated {
            let list = out.entry(json_name).or_insert_with(|| json!([]));
            if let Value::Array(a) = list {
                a.push(value);
            }
        } else {
            out.insert(json_name.to_owned(), value);
        }
    }
    // Go writes zero values of non-pointer fields; JSON would have omitted them.
    out.retain(|_, v| !matches!(v, Value::Null) && *v != json!("") && *v != json!(0) && *v != json!(false));
    Ok(out)
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object
/// it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("the protobuf body does not start with the Kubernetes magic number")?;
    let unknown = message("Unknown", rest)?;
    let kind = unknown
        .get("typeMeta")
        .and_then(|t| t.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api_version = unknown
        .get("typeMeta")
        .and_then(|t| t.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if api_version != "v1" || !supported("", &kind) {
        return Err(format!(
            "protobuf bodies of {api_version} {kind} are not modelled by the simulator"
        ));
    }
    let mut obj = message(&kind, &raw)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![
            u8::try_from(num << 3 | 2).unwrap(),
            u8::try_from(payload.len()).unwrap(),
        ];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_create_sends_it() {
        // ObjectMeta{name: "x", generateName: "", creationTimestamp: zero}, spec {}, status {}
        let meta = [field(1, b"x"), field(2, b""), field(8, b"")].concat();
        let ns = [field(1, &meta), field(2, b""), field(3, b"")].concat();
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let unknown = [field(1, &type_meta), field(2, &ns), field(3, b""), field(4, b"")].concat();
        let body = [b"k8s\0".as_slice(), &unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {}, "status": {}})
        );
    }

    #[test]
    fn maps_bytes_and_unknown_fields() {
        let entry = [field(1, b"k"), field(2, b"hi")].concat();
        let secret = [field(1, &field(1, b"s")), field(2, &entry), field(3, b"Opaque")].concat();
        let body = [
            b"k8s\0".as_slice(),
            &field(1, &[field(1, b"v1"), field(2, b"Secret")].concat()),
            &field(2, &secret),
        ]
        .concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["data"]["k"], "aGk=");
        assert_eq!(v["type"], "Opaque");
        let odd = [
            b"k8s\0".as_slice(),
            &field(1, &[field(1, b"v1"), field(2, b"ConfigMap")].concat()),
            &field(2, &field(9, b"?")),
        ]
        .concat();
        assert!(decode(&odd).unwrap_err().contains("field 9 of ConfigMap"));
        assert!(decode(b"{}").is_err());
    }
}
