//! Content negotiation as kube-apiserver does it: which representation a
//! response takes (`Accept`) and which request bodies are understood
//! (`Content-Type`).
//!
//! Sources: kubernetes/apiserver `pkg/endpoints/handlers/negotiation/negotiate.go`
//! (`NegotiateOutputMediaType`, `NegotiateInputSerializerForMediaType`: an empty
//! Content-Type means the first supported type, JSON) and `errors.go` (406
//! `NotAcceptable` "only the following media types are accepted: ...", 415
//! `UnsupportedMediaType` "the body of the request was in an unknown format -
//! accepted media types include: ..."); `handlers/response.go`
//! (`transformResponseObject`: `as=Table` / `as=PartialObjectMetadata[List]`
//! with `g=meta.k8s.io` and `v=v1` or `v1beta1`); `handlers/patch.go` (a patch
//! type the resource does not support is a 415 listing the ones it does;
//! custom resources have no strategic merge patch).

/// The representation a response takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `meta.k8s.io` Table at the given version (`v1` or `v1beta1`).
    Table(MetaVersion),
    /// `meta.k8s.io` PartialObjectMetadata (a list of them for collections).
    Metadata(MetaVersion),
}

/// The `meta.k8s.io` version a transformed response is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    V1,
    V1beta1,
}

impl MetaVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "meta.k8s.io/v1",
            Self::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// The media types the simulator can write (listed in a 406).
pub const PRODUCED: &[&str] = &["application/json", "application/yaml"];

/// Body media types of create and update (listed in a 415). Protobuf bodies are
/// decoded for the kinds in [`super::protobuf`].
pub const CONSUMED: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// One `Accept` clause: `type/subtype;k=v;...` with its quality.
struct Clause<'a> {
    media: &'a str,
    params: Vec<(&'a str, &'a str)>,
    q: f32,
}

fn clauses(accept: &str) -> Vec<Clause<'_>> {
    let mut out: Vec<Clause<'_>> = accept
        .split(',')
        .filter_map(|c| {
            let mut parts = c.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?;
            let mut q = 1.0;
            let mut params = vec![];
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                if k == "q" {
                    q = v.parse().unwrap_or(0.0);
                } else {
                    params.push((k, v.trim_matches('"')));
                }
            }
            Some(Clause { media, params, q })
        })
        .collect();
    // Highest quality first; equal qualities keep the client's order (goautoneg).
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

fn param<'a>(c: &Clause<'a>, k: &str) -> Option<&'a str> {
    c.params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v)
}

/// The output for an `Accept` header (absent or empty: JSON), or the 406 message.
pub fn output(accept: Option<&str>) -> Result<Output, String> {
    let accept = accept.map(str::trim).unwrap_or("");
    if accept.is_empty() {
        return Ok(Output::Json);
    }
    for c in clauses(accept) {
        if c.q <= 0.0 {
            continue;
        }
        let json = matches!(c.media, "application/json" | "application/*" | "*/*");
        match param(&c, "as") {
            Some(target) if c.media == "application/json" => {
                let version = match (param(&c, "g"), param(&c, "v")) {
                    (Some("meta.k8s.io"), Some("v1")) => MetaVersion::V1,
                    (Some("meta.k8s.io"), Some("v1beta1")) => MetaVersion::V1beta1,
                    _ => continue,
                };
                match target {
                    "Table" => return Ok(Output::Table(version)),
                    "PartialObjectMetadata" | "PartialObjectMetadataList" => return Ok(Output::Metadata(version)),
                    _ => continue,
                }
            }
            Some(_) => continue,
            None if json => return Ok(Output::Json),
            None if c.media == "application/yaml" => return Ok(Output::Yaml),
            None => continue,
        }
    }
    Err(format!(
        "only the following media types are accepted: {}",
        PRODUCED.join(", ")
    ))
}

/// A request body's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// JSON or YAML (JSON is YAML).
    Yaml,
    Protobuf,
}

/// The format of a create/update body, or the 415 message.
pub fn input(content_type: &str) -> Result<Input, String> {
    match media(content_type) {
        "" | "application/json" | "application/yaml" => Ok(Input::Yaml),
        "application/vnd.kubernetes.protobuf" => Ok(Input::Protobuf),
        _ => Err(unsupported(CONSUMED)),
    }
}

/// A patch's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// The patch type of a PATCH body, or the 415 message; custom resources accept
/// no strategic merge patch.
pub fn patch_type(content_type: &str, custom: bool) -> Result<PatchType, String> {
    let supported: &[&str] = if custom {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
    } else {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ]
    };
    let m = media(content_type);
    if !supported.contains(&m) {
        return Err(unsupported(supported));
    }
    Ok(match m {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        _ => PatchType::Apply,
    })
}

fn media(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn unsupported(types: &[&str]) -> String {
    format!(
        "the body of the request was in an unknown format - accepted media types include: {}",
        types.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_asks_for_a_table_first() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output(Some(kubectl)), Ok(Output::Table(MetaVersion::V1)));
        assert_eq!(output(None), Ok(Output::Json));
        assert_eq!(
            output(Some("application/vnd.kubernetes.protobuf, */*")),
            Ok(Output::Json)
        );
        assert_eq!(output(Some("application/yaml")), Ok(Output::Yaml));
        assert_eq!(
            output(Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")),
            Ok(Output::Metadata(MetaVersion::V1))
        );
    }

    #[test]
    fn what_cannot_be_produced_is_406() {
        let e = output(Some("application/vnd.kubernetes.protobuf")).unwrap_err();
        assert_eq!(
            e,
            "only the following media types are accepted: application/json, application/yaml"
        );
        assert!(output(Some("application/json;as=Table;g=other.io;v=v1")).is_err());
        assert!(output(Some("application/json;q=0")).is_err());
    }

    #[test]
    fn bodies_and_patches() {
        assert_eq!(input(""), Ok(Input::Yaml));
        assert_eq!(input("application/vnd.kubernetes.protobuf"), Ok(Input::Protobuf));
        assert!(
            input("application/cbor")
                .unwrap_err()
                .starts_with("the body of the request was in an unknown format")
        );
        assert_eq!(
            patch_type("application/strategic-merge-patch+json", false),
            Ok(PatchType::Strategic)
        );
        assert!(patch_type("application/strategic-merge-patch+json", true).is_err());
        assert!(patch_type("application/apply-patch+cbor", false).is_err());
    }
}
