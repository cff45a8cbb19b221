//! The exported manifests `bootstrap render` writes, like `flux install --export`:
//! `<cluster>/manifests/<n>-<phase>.yaml`, the Kubernetes objects phases 0-3
//! apply, built by the phases' own functions, with every Secret value
//! replaced by a placeholder (nothing is resolved, nothing is scanned). CRD
//! files phase 1 fetches by pin are listed (URL and sha256), not inlined.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::objects::Values;
use super::{catalog, core, flux, gitops, prerequisites};
use crate::inventory::Cluster;

/// Directory under the cluster's output directory.
pub const DIR: &str = "manifests";

fn yaml(header: &str, objs: &[Value]) -> String {
    let mut out = String::from(header);
    for o in objs {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(o).expect("JSON values serialise as YAML"));
    }
    out
}

/// `(path under the cluster's output directory, text)` per phase, in phase order.
pub fn manifests(cluster: &Cluster) -> Result<Vec<(PathBuf, String)>> {
    let err = |phase: &'static str| move |e: String| anyhow!("cluster {}: exporting phase {phase}: {e}", cluster.name);
    let pin = flux::pin();
    let head = |n: u8, title: &str| {
        format!(
            "# Phase {n} of `bootstrap up` for cluster {}: {title}.\n# Exported by `bootstrap render`; Secret values are placeholders.\n",
            cluster.name
        )
    };
    let mut crds_head = head(1, "CRDs, applied server-side and waited for until Established");
    crds_head.push_str(&format!(
        "# Flux {} CRDs from its upstream manifest ({}, sha256 {}) below; pinned files\n# phase 1 takes from the artifact store (not inlined):\n",
        pin.version, pin.source, pin.sha256
    ));
    for s in catalog::crds().sources {
        crds_head.push_str(&format!(
            "#   {} {} {} sha256 {}\n",
            s.name,
            s.version,
            s.url.as_deref().unwrap_or(&s.file),
            s.sha256
        ));
    }
    let files = [
        (
            "0-prerequisites.yaml",
            head(0, "namespaces and seed secrets"),
            prerequisites::desired_objects(cluster, Values::Placeholder).map_err(err("prerequisites"))?,
        ),
        ("1-crds.yaml", crds_head, flux::crds(cluster)),
        (
            "2-core.yaml",
            head(
                2,
                "Flux (upstream, patched as src/phases/flux_patches.rs lists) and the core releases",
            ),
            core::desired_objects(cluster).map_err(err("core"))?,
        ),
        (
            "3-gitops.yaml",
            head(3, "the GitOps root"),
            gitops::desired_objects(cluster, Values::Placeholder).map_err(err("gitops"))?,
        ),
    ];
    Ok(files
        .into_iter()
        .map(|(name, header, objs)| (PathBuf::from(DIR).join(name), yaml(&header, &objs)))
        .collect())
}
