//! Server-side printing: `meta.k8s.io` Tables with the columns kube-apiserver
//! prints, so `kubectl get` shows what it shows against a real cluster.
//!
//! Sources: kubernetes/kubernetes `pkg/printers/internalversion/printers.go`
//! (built-in kinds' column definitions and `printNode`, `printPod`,
//! `printDeployment`, `printDaemonSet`, ...; kinds without a printer get Name
//! and Age from `printObjectMeta`); kubernetes/apiserver
//! `pkg/registry/rest/table.go` (the default convertor: Name and Created At,
//! used by CustomResourceDefinitions); kubernetes/apiextensions-apiserver
//! `pkg/registry/customresource/tableconvertor` (Name, then a CRD version's
//! `additionalPrinterColumns` by JSONPath, `date` cells as human durations) and
//! `pkg/apiserver/helpers.go` (no columns: a default Age column); apimachinery
//! `pkg/util/duration` (`HumanDuration`); `handlers/response.go` (row objects
//! follow `includeObject`: `Metadata` by default, `Object`, `None`).

use serde_json::{Value, json};

use super::negotiate::MetaVersion;
use super::resources::ResourceType;

/// A column: name, type, priority (0 shown by default, 1 with `-o wide`).
type Col = (&'static str, &'static str, u8);

const NAME: Col = ("Name", "string", 0);
const AGE: Col = ("Age", "string", 0);
const CONTAINERS: Col = ("Containers", "string", 1);
const IMAGES: Col = ("Images", "string", 1);
const SELECTOR: Col = ("Selector", "string", 1);

/// Columns of a built-in kind with a printer in printers.go; `None`: `printObjectMeta`.
fn builtin_columns(group: &str, plural: &str) -> Option<&'static [Col]> {
    Some(match (group, plural) {
        ("", "nodes") => &[
            NAME,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            AGE,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        ("", "pods") => &[
            NAME,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("", "namespaces") => &[NAME, ("Status", "string", 0), AGE],
        ("", "configmaps") => &[NAME, ("Data", "string", 0), AGE],
        ("", "secrets") => &[NAME, ("Type", "string", 0), ("Data", "string", 0), AGE],
        ("", "serviceaccounts") => &[NAME, ("Secrets", "string", 0), AGE],
        ("", "services") => &[
            NAME,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            AGE,
            SELECTOR,
        ],
        ("apps", "deployments") => &[
            NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "daemonsets") => &[
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "statefulsets") => &[NAME, ("Ready", "string", 0), AGE, CONTAINERS, IMAGES],
        ("apps", "replicasets") => &[
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        // The default convertor of kubernetes/apiserver pkg/registry/rest/table.go.
        ("apiextensions.k8s.io", "customresourcedefinitions") => &[NAME, ("Created At", "date", 0)],
        _ => return None,
    })
}

/// How a kind is printed: a built-in printer, or a CRD version's printer columns.
pub enum Printer<'a> {
    Builtin(&'a ResourceType),
    /// `additionalPrinterColumns` of the served CRD version (empty: the default Age column).
    Custom(Vec<Value>),
}

impl<'a> Printer<'a> {
    /// The printer for a type; `crd` is the defining CRD for custom resources.
    pub fn new(t: &'a ResourceType, crd: Option<&Value>) -> Self {
        let Some(crd) = crd else {
            return Self::Builtin(t);
        };
        let cols = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .and_then(|vs| vs.iter().find(|v| v["name"] == t.version.as_str()))
            .and_then(|v| v["additionalPrinterColumns"].as_array())
            .cloned()
            .unwrap_or_default();
        Self::Custom(cols)
    }

    fn definitions(&self) -> Vec<Value> {
        let def = |(name, ty, priority): Col| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        };
        match self {
            Self::Builtin(t) => builtin_columns(&t.group, &t.plural)
                .unwrap_or(&[NAME, AGE])
                .iter()
                .map(|c| def(*c))
                .collect(),
            Self::Custom(cols) => {
                let mut out = vec![def(NAME)];
                if cols.is_empty() {
                    out.push(json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}));
                }
                for c in cols {
                    out.push(json!({
                        "name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")),
                        "description": c.get("description").cloned().unwrap_or_else(||
                            json!(format!("Custom resource definition column (in JSONPath format): {}", c["jsonPath"].as_str().unwrap_or_default()))),
                        "priority": c.get("priority").cloned().unwrap_or(json!(0)),
                    }));
                }
                out
            }
        }
    }

    fn cells(&self, o: &Value, now: i64) -> Vec<Value> {
        match self {
            Self::Builtin(t) => builtin_cells(&t.group, &t.plural, o, now),
            Self::Custom(cols) => {
                let mut cells = vec![json!(name(o))];
                if cols.is_empty() {
                    cells.push(json!(age(o, now)));
                }
                for c in cols {
                    let found = jsonpath(o, c["jsonPath"].as_str().unwrap_or_default());
                    cells.push(match (c["type"].as_str().unwrap_or("string"), found) {
                        (_, None) => Value::Null,
                        ("string", Some(v)) => json!(match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        }),
                        ("integer", Some(v)) => v.as_f64().map_or(Value::Null, |f| json!(f as i64)),
                        ("number", Some(v)) => v.as_f64().map_or(Value::Null, |f| json!(f)),
                        ("boolean", Some(v)) => v.as_bool().map_or(Value::Null, Value::Bool),
                        ("date", Some(Value::String(s))) => {
                            json!(parse_rfc3339(s).map_or("<invalid>".to_owned(), |t| human_duration(now - t)))
                        }
                        _ => Value::Null,
                    });
                }
                cells
            }
        }
    }
}

/// The Table for `objects` (one for a GET, all items for a list or a watch event).
pub fn table(
    printer: &Printer<'_>,
    objects: &[Value],
    resource_version: &str,
    version: MetaVersion,
    include_object: &str,
) -> Value {
    let now = now_secs();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": version.api_version(), "metadata": o["metadata"]}),
            };
            json!({"cells": printer.cells(o, now), "object": object})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": version.api_version(),
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": printer.definitions(),
        "rows": rows,
    })
}

fn name(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

fn age(o: &Value, now: i64) -> String {
    o.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .map_or("<unknown>".to_owned(), |t| human_duration(now - t))
}

fn int(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn str_or<'a>(o: &'a Value, ptr: &str, default: &'a str) -> &'a str {
    o.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(default)
}

fn len(o: &Value, ptr: &str) -> usize {
    match o.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// `k=v,k2=v2` (labels.FormatLabels), `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let pairs: Vec<String> = m
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A LabelSelector as metav1.FormatLabelSelector writes it.
fn format_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn containers_and_images(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn address(o: &Value, ty: &str) -> String {
    o.pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == ty)
        .and_then(|a| a["address"].as_str())
        .unwrap_or("<none>")
        .to_owned()
}

fn builtin_cells(group: &str, plural: &str, o: &Value, now: i64) -> Vec<Value> {
    let n = json!(name(o));
    let a = json!(age(o, now));
    match (group, plural) {
        ("", "nodes") => {
            // printNode: Ready/NotReady from the Ready condition, else Unknown; SchedulingDisabled.
            let mut status: Vec<&str> = vec![];
            if let Some(c) = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            {
                status.push(if c["status"] == "True" { "Ready" } else { "NotReady" });
            }
            if status.is_empty() {
                status.push("Unknown");
            }
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push("SchedulingDisabled");
            }
            // findNodeRoles: node-role.kubernetes.io/<role> labels and kubernetes.io/role.
            let mut roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
                    Some(r) if !r.is_empty() => Some(r.to_owned()),
                    _ if k == "kubernetes.io/role" => v.as_str().map(str::to_owned),
                    _ => None,
                })
                .collect();
            roles.sort();
            roles.dedup();
            let roles = if roles.is_empty() {
                "<none>".into()
            } else {
                roles.join(",")
            };
            vec![
                n,
                json!(status.join(",")),
                json!(roles),
                a,
                json!(str_or(o, "/status/nodeInfo/kubeletVersion", "")),
                json!(address(o, "InternalIP")),
                json!(address(o, "ExternalIP")),
                json!(str_or(o, "/status/nodeInfo/osImage", "<unknown>")),
                json!(str_or(o, "/status/nodeInfo/kernelVersion", "<unknown>")),
                json!(str_or(o, "/status/nodeInfo/containerRuntimeVersion", "<unknown>")),
            ]
        }
        ("", "pods") => {
            let total = len(o, "/spec/containers");
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|s| s["restartCount"].as_i64().unwrap_or(0)).sum();
            // printPod: the phase, or the pod's reason, or a container's waiting/terminated reason.
            let mut reason = str_or(o, "/status/reason", str_or(o, "/status/phase", "")).to_owned();
            for s in statuses.iter().rev() {
                if let Some(r) = s
                    .pointer("/state/waiting/reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    reason = r.to_owned();
                } else if let Some(r) = s
                    .pointer("/state/terminated/reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    reason = r.to_owned();
                }
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                reason = "Terminating".into();
            }
            vec![
                n,
                json!(format!("{ready}/{total}")),
                json!(reason),
                json!(restarts.to_string()),
                a,
                json!(str_or(o, "/status/podIP", "<none>")),
                json!(str_or(o, "/spec/nodeName", "<none>")),
                json!(str_or(o, "/status/nominatedNodeName", "<none>")),
                json!("<none>"),
            ]
        }
        ("", "namespaces") => vec![n, json!(str_or(o, "/status/phase", "")), a],
        ("", "configmaps") => vec![n, json!(len(o, "/data") + len(o, "/binaryData")), a],
        ("", "secrets") => vec![n, json!(str_or(o, "/type", "Opaque")), json!(len(o, "/data")), a],
        ("", "serviceaccounts") => vec![n, json!(len(o, "/secrets")), a],
        ("", "services") => {
            let ty = str_or(o, "/spec/type", "ClusterIP");
            let external: Vec<String> = match ty {
                "LoadBalancer" => {
                    let ips: Vec<String> = o
                        .pointer("/status/loadBalancer/ingress")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(str::to_owned))
                        .collect();
                    if ips.is_empty() { vec!["<pending>".into()] } else { ips }
                }
                "ExternalName" => vec![str_or(o, "/spec/externalName", "<none>").to_owned()],
                _ => o
                    .pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
            };
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect();
            let cluster_ip = if ty == "ExternalName" {
                "<none>"
            } else {
                str_or(o, "/spec/clusterIP", "<none>")
            };
            vec![
                n,
                json!(ty),
                json!(cluster_ip),
                json!(if external.is_empty() {
                    "<none>".into()
                } else {
                    external.join(",")
                }),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                }),
                a,
                json!(format_labels(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "deployments") => {
            // apps/v1 defaulting: spec.replicas is 1 when unset (pkg/apis/apps/v1/defaults.go).
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let (c, i) = containers_and_images(o.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            vec![
                n,
                json!(format!("{}/{desired}", int(o, "/status/readyReplicas"))),
                json!(int(o, "/status/updatedReplicas")),
                json!(int(o, "/status/availableReplicas")),
                a,
                json!(c),
                json!(i),
                json!(format_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "daemonsets") => {
            let (c, i) = containers_and_images(o.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            vec![
                n,
                json!(int(o, "/status/desiredNumberScheduled")),
                json!(int(o, "/status/currentNumberScheduled")),
                json!(int(o, "/status/numberReady")),
                json!(int(o, "/status/updatedNumberScheduled")),
                json!(int(o, "/status/numberAvailable")),
                json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
                a,
                json!(c),
                json!(i),
                json!(format_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "statefulsets") => {
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let (c, i) = containers_and_images(o.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            vec![
                n,
                json!(format!("{}/{desired}", int(o, "/status/readyReplicas"))),
                a,
                json!(c),
                json!(i),
            ]
        }
        ("apps", "replicasets") => {
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let (c, i) = containers_and_images(o.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            vec![
                n,
                json!(desired),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                a,
                json!(c),
                json!(i),
                json!(format_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![
                n,
                o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
            ]
        }
        _ => vec![n, a],
    }
}

/// The simple JSONPath of printer columns (`.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`),
/// first match; CRD validation allows only such paths.
pub fn jsonpath<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = o;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur.as_array()?.iter().find(|e| match &e[key.trim()] {
                    Value::String(s) => s == want,
                    other => serde_json::to_string(other).is_ok_and(|o| o == want),
                })?;
            } else {
                cur = cur.get(inner.trim().parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant), the inverse of store::now_rfc3339.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_as_apimachinery_writes_them() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
        assert_eq!(human_duration(86_400 * 3), "3d");
        assert_eq!(human_duration(86_400 * 400), "400d");
    }

    #[test]
    fn timestamps_round_trip_with_the_store() {
        let now = super::super::store::now_rfc3339();
        assert!((parse_rfc3339(&now).unwrap() - now_secs()).abs() <= 1);
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
    }

    #[test]
    fn printer_column_jsonpaths() {
        let o = json!({"status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]},
                       "spec": {"list": [1, 2]}});
        assert_eq!(
            jsonpath(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(jsonpath(&o, ".spec.list[1]"), Some(&json!(2)));
        assert_eq!(jsonpath(&o, ".spec.missing"), None);
    }

    #[test]
    fn nodes_print_status_roles_and_version() {
        let t = super::super::resources::builtins()
            .into_iter()
            .find(|t| t.plural == "nodes")
            .unwrap();
        let node = json!({"metadata": {"name": "cp-1", "creationTimestamp": "2020-01-01T00:00:00Z",
                                       "labels": {"node-role.kubernetes.io/control-plane": ""}},
                          "spec": {"unschedulable": true},
                          "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.34.1"}}});
        let tb = table(&Printer::new(&t, None), &[node], "7", MetaVersion::V1, "Metadata");
        let heads: Vec<&str> = tb["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(heads, ["Name", "Status", "Roles", "Age", "Version"]);
        let cells = &tb["rows"][0]["cells"];
        assert_eq!(cells[1], "NotReady,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.34.1");
        assert_eq!(tb["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
