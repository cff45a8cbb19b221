//! Field-level validation errors and the `Status` bodies kube-apiserver builds
//! from them, with upstream's texts: `field.Error` and its `ErrorBody`
//! (k8s.io/apimachinery/pkg/util/validation/field/errors.go), `NewInvalid`,
//! `NewBadRequest`, `NewForbidden`, `NewConflict` (k8s.io/apimachinery/pkg/api/errors/errors.go).

use serde_json::{Value, json};

/// `field.ErrorType`: the `reason` of a `details.causes` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    TypeInvalid,
}

impl ErrorType {
    /// The machine-readable cause type (`FieldValueRequired`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// `ErrorType.String()`: the human-readable prefix.
    fn text(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }
}

/// One field error: a path such as `spec.template.spec.containers[0].image`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    /// The offending value; `None` when upstream omits it.
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    /// `field.Required`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    /// `field.Invalid`.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value), detail)
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    /// `field.Duplicate`.
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value), "")
    }

    /// `field.NotSupported`: `supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(ErrorType::NotSupported, field, Some(value), detail)
    }

    pub fn new(kind: ErrorType, field: impl Into<String>, value: Option<Value>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// `ErrorBody()`: the message without the field path.
    pub fn body(&self) -> String {
        let mut s = match (self.kind, &self.value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong, _) | (_, None) => {
                self.kind.text().to_owned()
            }
            (_, Some(v)) => format!("{}: {}", self.kind.text(), go_value(v)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for a string (`strconv.Quote`); JSON string escaping agrees for printable text.
pub fn go_quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// How `ErrorBody` prints a bad value: `%q` for strings, `%v` for numbers and booleans, `null`.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".into(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // Upstream prints Go structs with %#v; JSON is the closest readable form here.
        other => other.to_string(),
    }
}

/// `utilerrors.NewAggregate(list).Error()`: one message as is, several as `[a, b]`, duplicates once.
pub fn aggregate(errs: &[FieldError]) -> String {
    let mut msgs: Vec<String> = vec![];
    for e in errs {
        let m = e.to_string();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    match msgs.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// A failure `Status` body.
pub fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "code": code,
    });
    // StatusReasonUnknown is "" and omitted (omitempty), as for plain errors turned into 500s.
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    if let Some(d) = details {
        body["details"] = d;
    }
    body
}

/// `errors.NewInvalid`: 422, `<Kind>.<group> "<name>" is invalid: <aggregate>`, one cause per error.
pub fn invalid(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> Value {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    let message = if errs.is_empty() {
        format!("{qualified} {} is invalid", go_quote(name))
    } else {
        format!("{qualified} {} is invalid: {}", go_quote(name), aggregate(errs))
    };
    let mut details = json!({"name": name, "kind": kind, "causes": causes});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    status_body(422, "Invalid", &message, Some(details))
}

/// `errors.NewConflict` with the optimistic-lock message (k8s.io/apiserver/pkg/registry/generic/registry/store.go
/// `OptimisticLockErrorMsg`): 409 `Operation cannot be fulfilled on <resource> "<name>": ...`.
pub fn conflict(group: &str, resource: &str, name: &str) -> Value {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let message = format!(
        "Operation cannot be fulfilled on {qualified} {}: the object has been modified; please apply your changes to the latest version and try again",
        go_quote(name)
    );
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    status_body(409, "Conflict", &message, Some(details))
}

/// `errors.NewForbidden`: 403 `<resource> "<name>" is forbidden: <why>`.
pub fn forbidden(group: &str, resource: &str, name: &str, why: &str, causes: Vec<Value>) -> Value {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let message = format!("{qualified} {} is forbidden: {why}", go_quote(name));
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if !causes.is_empty() {
        details["causes"] = Value::Array(causes);
    }
    status_body(403, "Forbidden", &message, Some(details))
}

/// A `Warning` header value: `299 - "<text>"` (k8s.io/apimachinery/pkg/util/net `NewWarningHeader`).
pub fn warning_header(text: &str) -> String {
    format!("299 - {}", go_quote(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_read_as_upstream_prints_them() {
        assert_eq!(
            FieldError::required("spec.sourceRef", "").to_string(),
            "spec.sourceRef: Required value"
        );
        assert_eq!(
            FieldError::not_supported("spec.mode", json!("x"), &["a", "b"]).to_string(),
            r#"spec.mode: Unsupported value: "x": supported values: "a", "b""#
        );
        assert_eq!(
            FieldError::invalid("spec.replicas", json!(-1), "must be greater than or equal to 0").to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn invalid_status_has_the_apiserver_shape() {
        let errs = [
            FieldError::required("spec.selector", ""),
            FieldError::required("spec.template.spec.containers", ""),
        ];
        let s = invalid("Deployment", "apps", "web", &errs);
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(
            s["message"],
            r#"Deployment.apps "web" is invalid: [spec.selector: Required value, spec.template.spec.containers: Required value]"#
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.selector");
        assert_eq!(s["details"]["group"], "apps");
        let core = invalid("ConfigMap", "", "x", &errs[..1]);
        assert_eq!(
            core["message"],
            r#"ConfigMap "x" is invalid: spec.selector: Required value"#
        );
    }

    #[test]
    fn warning_header_quotes_like_go() {
        assert_eq!(
            warning_header(r#"unknown field "spec.foo""#),
            r#"299 - "unknown field \"spec.foo\"""#
        );
    }
}
