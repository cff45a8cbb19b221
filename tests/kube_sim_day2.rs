//! Day-2 node operations against the Kubernetes API simulator, through
//! kube-rs (a real client): cordon honoured by the scheduler model, the
//! `pods/eviction` subresource refused with 429 while a PodDisruptionBudget
//! allows no disruption and allowed once it does, and Node deletion
//! (its pods collected, the Deployment's replacements Pending while every
//! other node is cordoned). Listens on 127.83.0.1.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use xtask::kube_sim::{Behaviour, KubeSim, SimOptions};

async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    for _ in 0..300 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn pods_by_node(pods: &Api<Pod>) -> Vec<(String, Option<String>, bool)> {
    let mut out: Vec<_> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (p.metadata.name.unwrap(), p.spec.and_then(|s| s.node_name), ready)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_eviction_with_a_budget_and_node_deletion() {
    let sim = KubeSim::start(SimOptions {
        bind: "127.83.0.1:0".parse().unwrap(),
        behaviour: Behaviour {
            cni_daemonset: None,
            ..Behaviour::uniform(Duration::from_millis(20))
        },
        ..SimOptions::default()
    })
    .await
    .unwrap();
    for n in ["n1", "n2", "n3"] {
        sim.register_node(n);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, sim.admin_kubeconfig()).unwrap();
    let client = bootstrap::k8s::Client::from_kubeconfig(&path).await.unwrap();
    let kube = client.kube().clone();
    let nodes: Api<Node> = Api::all(kube.clone());
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(kube.clone(), "default");

    // Cordon n1 and n2 (kubectl cordon: spec.unschedulable) before the workload exists.
    let cordon = |v: bool| Patch::Merge(json!({"spec": {"unschedulable": v}}));
    for n in ["n1", "n2"] {
        nodes.patch(n, &PatchParams::default(), &cordon(true)).await.unwrap();
    }
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]}}}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deploy).await.unwrap();
    eventually("two ready pods", || async {
        let p = pods_by_node(&pods).await;
        p.len() == 2 && p.iter().all(|(_, _, ready)| *ready)
    })
    .await;
    let placed = pods_by_node(&pods).await;
    assert!(
        placed.iter().all(|(_, node, _)| node.as_deref() == Some("n3")),
        "cordoned nodes get no pods: {placed:?}"
    );

    // A budget that needs both pods: eviction is refused with upstream's 429.
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    eventually("the PDB status computed from pods", || async {
        pdbs.get("web")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.current_healthy == 2 && s.desired_healthy == 2)
    })
    .await;
    let victim = placed[0].0.clone();
    let refused = pods.evict(&victim, &EvictParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("expected an API error: {refused}")
    };
    assert_eq!(status.code, 429, "{status:?}");
    assert_eq!(status.reason, "TooManyRequests");
    assert_eq!(
        status.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(pods.get_opt(&victim).await.unwrap().is_some(), "nothing evicted");

    // Uncordon n1 and scale to 3: one disruption allowed, the eviction goes through.
    nodes
        .patch("n1", &PatchParams::default(), &cordon(false))
        .await
        .unwrap();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("the budget allows one disruption", || async {
        pdbs.get("web")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.disruptions_allowed == 1)
    })
    .await;
    pods.evict(&victim, &EvictParams::default())
        .await
        .expect("eviction allowed");
    assert!(
        pods.get_opt(&victim).await.unwrap().is_none(),
        "the evicted pod is gone"
    );

    // Node deletion: n3's pods are collected; with n2 still cordoned, replacements land on n1.
    nodes.delete("n3", &Default::default()).await.unwrap();
    eventually("no pod left on the deleted node", || async {
        pods_by_node(&pods)
            .await
            .iter()
            .all(|(_, n, _)| n.as_deref() != Some("n3"))
    })
    .await;
    eventually("three pods again, on n1", || async {
        let p = pods_by_node(&pods).await;
        p.len() == 3 && p.iter().all(|(_, n, _)| n.as_deref() == Some("n1"))
    })
    .await;
    assert!(nodes.get_opt("n3").await.unwrap().is_none());
}
