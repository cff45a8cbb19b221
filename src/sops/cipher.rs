//! SOPS value encryption (`aes/cipher.go`):
//! `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]`, AES-256-GCM with
//! the data key, a nonce of whatever length `iv` has (sops writes 32 bytes),
//! the tag kept apart from the data, and the value's additional data. The
//! plaintext is typed by `type`; [`mac_bytes`] is sops's `ToBytes`.

use aes_gcm::AesGcm;
use aes_gcm::aead::array::typenum::{U12, U16, U32};
use aes_gcm::aead::array::{Array, ArraySize};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine;

use super::tree::Value;

/// Decrypts one `ENC[...]` value; an empty string stays empty (sops never
/// encrypts it). Errors describe the failure, never the value.
pub fn decrypt(value: &str, key: &[u8; 32], aad: &str) -> Result<Value, String> {
    if value.is_empty() {
        return Ok(Value::Str(String::new()));
    }
    let enc = parse(value).ok_or("not an ENC[AES256_GCM,...] value")?;
    let mut sealed = enc.data;
    sealed.extend_from_slice(&enc.tag);
    let plain = match enc.iv.len() {
        32 => open::<U32>(key, &enc.iv, &sealed, aad),
        16 => open::<U16>(key, &enc.iv, &sealed, aad),
        12 => open::<U12>(key, &enc.iv, &sealed, aad),
        n => return Err(format!("unsupported {n}-byte iv")),
    }
    .ok_or("AES-GCM authentication failed (wrong data key, or the value or its key path was changed)")?;
    typed(plain, enc.kind)
}

struct Encrypted<'a> {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: &'a str,
}

/// The fields of an `ENC[...]` value (`aes/cipher.go` parse: the regex
/// `^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]`).
fn parse(value: &str) -> Option<Encrypted<'_>> {
    let body = value.strip_prefix("ENC[AES256_GCM,data:")?;
    let body = &body[..body.rfind(']')?];
    let (data, rest) = body.split_once(",iv:")?;
    let (iv, rest) = rest.split_once(",tag:")?;
    let (tag, kind) = rest.split_once(",type:")?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
    Some(Encrypted {
        data: b64(data)?,
        iv: b64(iv)?,
        tag: b64(tag)?,
        kind,
    })
}

fn open<N: ArraySize>(key: &[u8; 32], iv: &[u8], sealed: &[u8], aad: &str) -> Option<Vec<u8>> {
    let cipher = AesGcm::<Aes256, N>::new(&Array::from(*key));
    let nonce = Array::<u8, N>::try_from(iv).ok()?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .ok()
}

/// The plaintext as `type` says (`aes/cipher.go` Decrypt: Atoi, ParseFloat,
/// ParseBool, raw bytes; `time` and `comment` stay text).
fn typed(plain: Vec<u8>, kind: &str) -> Result<Value, String> {
    if kind == "bytes" {
        return Ok(Value::Bytes(plain));
    }
    let text = String::from_utf8(plain).map_err(|_| format!("a `{kind}` value that is not UTF-8"))?;
    let bad = || format!("not a valid `{kind}` value");
    Ok(match kind {
        "str" | "time" | "comment" => Value::Str(text),
        "int" => Value::Int(text.parse().map_err(|_| bad())?),
        "float" => Value::Float(text.parse().map_err(|_| bad())?),
        "bool" => Value::Bool(match text.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(bad()),
        }),
        other => return Err(format!("unknown value type `{other}`")),
    })
}

/// The bytes a value feeds the MAC (`sops.go` ToBytes): strings as they
/// are, integers in decimal, floats as Go's `FormatFloat(f, 'f', -1, 64)`,
/// booleans `True`/`False`. `None` for maps, lists and null (never hashed).
pub fn mac_bytes(v: &Value) -> Option<Vec<u8>> {
    Some(match v {
        Value::Str(s) => s.as_bytes().to_vec(),
        Value::Bytes(b) => b.clone(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Float(f) => go_float(*f).into_bytes(),
        Value::Bool(true) => b"True".to_vec(),
        Value::Bool(false) => b"False".to_vec(),
        Value::Map(_) | Value::List(_) | Value::Null => return None,
    })
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that
/// reads back the same, never an exponent; Rust's `Display` does the same
/// for finite values.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_as_go_does() {
        assert_eq!(go_float(1234568000.0), "1234568000");
        assert_eq!(go_float(25.4), "25.4");
        assert_eq!(go_float(1e21), "1000000000000000000000");
        assert_eq!(go_float(0.000001), "0.000001");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn mac_bytes_of_typed_values() {
        assert_eq!(mac_bytes(&Value::Bool(true)).unwrap(), b"True");
        assert_eq!(mac_bytes(&Value::Int(-3)).unwrap(), b"-3");
        assert_eq!(mac_bytes(&Value::Null), None);
    }

    #[test]
    fn malformed_values_are_refused_without_echoing_them() {
        let key = [7u8; 32];
        let e = decrypt("ENC[AES256_GCM,data:c2VjcmV0,iv:AAAA,tag:AAAA,type:str]", &key, "a:").unwrap_err();
        assert!(e.contains("iv"), "{e}");
        let e = decrypt("plain-secret", &key, "a:").unwrap_err();
        assert!(!e.contains("plain-secret"), "{e}");
        assert_eq!(decrypt("", &key, "a:").unwrap(), Value::Str(String::new()));
    }
}
