//! What legacy discovery (`APIResourceList`) says of each built-in resource
//! beyond its name: short names, categories and verbs, with kube-apiserver's
//! values, so `kubectl get cm`, `kubectl get deploy -A` and `kubectl get all`
//! resolve as they do against a real cluster.
//!
//! Source: each resource's REST storage in kubernetes/kubernetes,
//! `pkg/registry/<group>/<resource>/storage/storage.go` (`ShortNames()`,
//! `Categories()`), as served by kube-apiserver v1.34; verbs follow from the
//! storage interfaces each implements (`pkg/registry/core/namespace/storage`
//! has no `DeleteCollection`).

/// Short names and categories of a built-in resource, by (group, plural).
pub fn builtin_names(group: &str, plural: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const ALL: &[&str] = &["all"];
    const EXT: &[&str] = &["api-extensions"];
    match (group, plural) {
        ("", "namespaces") => (&["ns"], &[]),
        ("", "nodes") => (&["no"], &[]),
        ("", "configmaps") => (&["cm"], &[]),
        ("", "serviceaccounts") => (&["sa"], &[]),
        ("", "services") => (&["svc"], ALL),
        ("", "pods") => (&["po"], ALL),
        ("", "endpoints") => (&["ep"], &[]),
        ("", "events") => (&["ev"], &[]),
        ("", "persistentvolumeclaims") => (&["pvc"], &[]),
        ("apps", "deployments") => (&["deploy"], ALL),
        ("apps", "daemonsets") => (&["ds"], ALL),
        ("apps", "statefulsets") => (&["sts"], ALL),
        ("apps", "replicasets") => (&["rs"], ALL),
        ("batch", "jobs") => (&[], ALL),
        ("batch", "cronjobs") => (&["cj"], ALL),
        ("apiextensions.k8s.io", "customresourcedefinitions") => (&["crd", "crds"], EXT),
        (
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies"
            | "validatingadmissionpolicybindings"
            | "validatingwebhookconfigurations"
            | "mutatingwebhookconfigurations",
        ) => (&[], EXT),
        ("storage.k8s.io", "storageclasses") => (&["sc"], &[]),
        ("networking.k8s.io", "networkpolicies") => (&["netpol"], &[]),
        ("networking.k8s.io", "ingresses") => (&["ing"], &[]),
        ("policy", "poddisruptionbudgets") => (&["pdb"], &[]),
        ("scheduling.k8s.io", "priorityclasses") => (&["pc"], &[]),
        _ => (&[], &[]),
    }
}

/// Verbs of a resource's main endpoint.
pub fn verbs(group: &str, plural: &str) -> &'static [&'static str] {
    const ALL: &[&str] = &[
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    // Namespaces cannot be deleted as a collection (pkg/registry/core/namespace/storage).
    const NAMESPACE: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
    if (group, plural) == ("", "namespaces") {
        NAMESPACE
    } else {
        ALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_short_names_and_categories() {
        assert_eq!(builtin_names("", "configmaps").0, ["cm"]);
        assert_eq!(builtin_names("apps", "deployments"), (&["deploy"][..], &["all"][..]));
        assert_eq!(
            builtin_names("apiextensions.k8s.io", "customresourcedefinitions").0,
            ["crd", "crds"]
        );
        assert!(builtin_names("", "secrets").0.is_empty());
        assert!(!verbs("", "namespaces").contains(&"deletecollection"));
    }
}
