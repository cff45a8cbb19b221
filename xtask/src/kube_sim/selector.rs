//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field
//! selectors (`path=value`, `path!=value` on any dotted field such as
//! `metadata.name`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Req>,
    fields: bool,
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, vec![]);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl Selector {
    /// Parses a label selector.
    pub fn labels(s: &str) -> Result<Self, String> {
        Self::parse(s, false)
    }

    /// Parses a field selector.
    pub fn fields(s: &str) -> Result<Self, String> {
        Self::parse(s, true)
    }

    fn parse(s: &str, fields: bool) -> Result<Self, String> {
        let mut reqs = vec![];
        for part in split_top(s) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(
                    k.trim().into(),
                    set(rest).ok_or_else(|| format!("bad selector {part:?}"))?,
                )
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(
                    k.trim().into(),
                    set(rest).ok_or_else(|| format!("bad selector {part:?}"))?,
                )
            } else if fields {
                return Err(format!("field selector {part:?} needs = or !="));
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(part.into())
            };
            reqs.push(req);
        }
        Ok(Self { reqs, fields })
    }

    fn value(&self, obj: &Value, key: &str) -> Option<String> {
        let v = if self.fields {
            key.split('.').try_fold(obj, |v, seg| v.get(seg))?
        } else {
            obj.pointer("/metadata/labels")?.get(key)?
        };
        Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => {
                self.value(obj, k).as_deref() == Some(v.as_str())
                    || (self.fields && v.is_empty() && self.value(obj, k).is_none())
            }
            Req::Ne(k, v) => self.value(obj, k).as_deref() != Some(v.as_str()),
            Req::In(k, vs) => self.value(obj, k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => self.value(obj, k).is_none_or(|x| !vs.contains(&x)),
            Req::Exists(k) => self.value(obj, k).is_some(),
            Req::NotExists(k) => self.value(obj, k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors_match_like_the_apiserver() {
        let o = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "fe"}}});
        for (s, want) in [
            ("app=web", true),
            ("app==web,tier!=be", true),
            ("app in (web, api),!missing", true),
            ("tier notin (fe)", false),
            ("app", true),
            ("missing", false),
        ] {
            assert_eq!(Selector::labels(s).unwrap().matches(&o), want, "{s}");
        }
        assert!(Selector::fields("metadata.name=a").unwrap().matches(&o));
        assert!(!Selector::fields("metadata.name!=a").unwrap().matches(&o));
    }
}
