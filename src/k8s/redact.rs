//! Keeps Secret values out of logs and errors: a [`Redactor`] knows the values
//! (as written, base64-decoded and base64-encoded) of every Secret in a set of
//! manifests and replaces them in any text that leaves this layer.

use base64::Engine;
use serde_json::Value;

/// Replaces known secret values with `***`.
#[derive(Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

/// Values shorter than this are not scrubbed (they would mangle ordinary text);
/// a Secret value this short is not a secret worth the name.
const MIN_LEN: usize = 4;

impl Redactor {
    /// Learns the values of a Secret object (JSON): `data` (base64 and decoded) and `stringData`.
    pub fn learn_object(&mut self, obj: &Value) {
        if obj["kind"] != "Secret" {
            return;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        for v in obj["data"].as_object().into_iter().flat_map(|m| m.values()) {
            if let Some(s) = v.as_str() {
                self.add(s);
                if let Ok(raw) = b64.decode(s) {
                    self.add(&String::from_utf8_lossy(&raw));
                }
            }
        }
        for v in obj["stringData"].as_object().into_iter().flat_map(|m| m.values()) {
            if let Some(s) = v.as_str() {
                self.add(s);
                self.add(&b64.encode(s));
            }
        }
    }

    /// Adds one value to scrub.
    pub fn add(&mut self, value: &str) {
        let v = value.trim();
        if v.len() >= MIN_LEN && !self.values.iter().any(|x| x == v) {
            self.values.push(v.to_owned());
            // Longest first, so a value containing another is replaced whole.
            self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every known value replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}

/// Scrubs credentials (`client-key-data`, `token`, `password`, ...) of a
/// kubeconfig's text from `message`.
pub fn scrub_kubeconfig(message: &str, kubeconfig: &str) -> String {
    let mut r = Redactor::default();
    for line in kubeconfig.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim().trim_start_matches("- ");
        if matches!(
            k,
            "client-key-data" | "client-key" | "token" | "password" | "client-certificate-data"
        ) {
            r.add(v.trim().trim_matches('"').trim_matches('\''));
        }
    }
    r.scrub(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_plain_encoded_and_decoded_values() {
        let mut r = Redactor::default();
        r.learn_object(&serde_json::json!({
            "kind": "Secret", "data": {"a": "aHVudGVyMg=="}, "stringData": {"b": "s3cr3t-value"}
        }));
        let text = "bad hunter2 and aHVudGVyMg== and s3cr3t-value and czNjcjN0LXZhbHVl";
        assert_eq!(r.scrub(text), "bad *** and *** and *** and ***");
    }
}
