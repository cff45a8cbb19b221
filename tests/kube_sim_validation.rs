//! The Kubernetes API simulator refuses what kube-apiserver refuses, with the
//! same status codes, reasons, causes, messages and `Warning` headers, driven
//! over real HTTPS with raw requests (so the bodies are checked as sent), with
//! real upstream CRDs (Flux, Cilium) for the structural-schema cases.

use std::path::PathBuf;
use std::time::Duration;

use bootstrap::k8s::{ApplyOpts, Client, apply_manifests};
use serde_json::{Value, json};
use xtask::kube_sim::{KubeSim, SimOptions};

fn shared(rel: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|b| b.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()));
    std::fs::read_to_string(path).unwrap()
}

/// A raw HTTPS client for the simulator, authenticated as admin.
struct Raw {
    http: reqwest::Client,
    base: String,
}

/// One answer: status code, `Warning` headers, JSON body.
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

impl Raw {
    fn new(sim: &KubeSim) -> Self {
        bootstrap::tls::install_crypto_provider();
        let cert = sim.tls().issue_client_cert("admin", Some("system:masters")).unwrap();
        let identity = reqwest::Identity::from_pem(format!("{}{}", cert.cert_pem, cert.key_pem).as_bytes()).unwrap();
        let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca])
            .identity(identity)
            .build()
            .unwrap();
        Self {
            http,
            base: sim.url().to_owned(),
        }
    }

    async fn send(&self, method: &str, path: &str, content_type: &str, body: Option<String>) -> Answer {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("Content-Type", content_type);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
        Answer { code, warnings, body }
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, "application/json", Some(body.to_string()))
            .await
    }

    async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send("PUT", path, "application/json", Some(body.to_string())).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, "application/json", None).await
    }

    /// GET, change, PUT; again on 409 as client-go's `RetryOnConflict` does (controllers write status meanwhile).
    async fn update(&self, path: &str, change: impl Fn(&mut Value)) -> Answer {
        for _ in 0..20 {
            let mut obj = self.get(path).await.body;
            change(&mut obj);
            let a = self.put(path, &obj).await;
            if a.code != 409 {
                return a;
            }
        }
        panic!("{path}: conflicts on every attempt");
    }
}

async fn start() -> (KubeSim, Raw) {
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let raw = Raw::new(&sim);
    (sim, raw)
}

/// Applies real upstream CRDs through the product's own apply path (waits until Established).
async fn install(sim: &KubeSim, yaml: &str) {
    let client = Client::from_kubeconfig_yaml(sim.admin_kubeconfig(), "sim admin kubeconfig")
        .await
        .unwrap();
    apply_manifests(&client, yaml, &ApplyOpts::default()).await.unwrap();
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str) -> Value {
    json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":name},
           "spec":{"selector":{"matchLabels":{"app":"web"}},
                   "template":{"metadata":{"labels":{"app":"web"}},
                               "spec":{"containers":[{"name":"web","image":"nginx:1.27"}]}}}})
}

/// A Deployment body with an unknown field and a repeated one, as text (JSON objects cannot repeat keys).
fn deployment_with_unknown_and_duplicate(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}"}},
            "spec":{{"paused":true,"paused":false,"foo":"bar","selector":{{"matchLabels":{{"app":"web"}}}},
                    "template":{{"metadata":{{"labels":{{"app":"web"}}}},
                                "spec":{{"containers":[{{"name":"web","image":"nginx","bogus":1}}]}}}}}}}}"#
    )
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_and_duplicate_fields_with_their_paths() {
    let (_sim, raw) = start().await;
    let a = raw
        .send(
            "POST",
            &format!("{DEPLOYMENTS}?fieldValidation=Strict"),
            "application/json",
            Some(deployment_with_unknown_and_duplicate("strict")),
        )
        .await;
    assert_eq!(a.code, 400);
    assert_eq!(a.body["reason"], "BadRequest");
    assert_eq!(a.body["kind"], "Status");
    assert_eq!(a.body["status"], "Failure");
    assert_eq!(
        a.body["message"],
        r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: duplicate field "spec.paused", unknown field "spec.foo", unknown field "spec.template.spec.containers[0].bogus""#
    );
    assert_eq!(
        raw.get(&format!("{DEPLOYMENTS}/strict")).await.code,
        404,
        "nothing stored"
    );
}

#[tokio::test]
async fn warn_is_the_server_default_and_sends_one_warning_per_field() {
    let (sim, raw) = start().await;
    let a = raw
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            Some(deployment_with_unknown_and_duplicate("warned")),
        )
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.warnings,
        [
            r#"299 - "duplicate field \"spec.paused\"""#,
            r#"299 - "unknown field \"spec.foo\"""#,
            r#"299 - "unknown field \"spec.template.spec.containers[0].bogus\"""#,
        ]
    );
    let stored = sim.object("apps", "deployments", "default", "warned").unwrap();
    assert!(stored["spec"].get("foo").is_none(), "unknown fields are dropped");
    assert_eq!(stored["spec"]["paused"], false, "the last duplicate wins");
}

#[tokio::test]
async fn ignore_drops_unknown_fields_silently_and_bad_directives_are_refused() {
    let (sim, raw) = start().await;
    let a = raw
        .send(
            "POST",
            &format!("{DEPLOYMENTS}?fieldValidation=Ignore"),
            "application/json",
            Some(deployment_with_unknown_and_duplicate("ignored")),
        )
        .await;
    assert_eq!(a.code, 201);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert!(
        sim.object("apps", "deployments", "default", "ignored").unwrap()["spec"]
            .get("foo")
            .is_none()
    );

    let bad = raw
        .post(&format!("{DEPLOYMENTS}?fieldValidation=strict"), &deployment("x"))
        .await;
    assert_eq!(bad.code, 400);
    assert_eq!(
        bad.body["message"],
        r#"fieldValidation: Unsupported value: "strict": supported values: "Ignore", "Warn", "Strict""#
    );
}

#[tokio::test]
async fn server_side_apply_with_an_undeclared_field_fails_as_structured_merge_diff_does() {
    let (_sim, raw) = start().await;
    let mut d = deployment("applied");
    d["spec"]["foo"] = json!("bar");
    let a = raw
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/applied?fieldManager=test&fieldValidation=Ignore"),
            "application/apply-patch+yaml",
            Some(d.to_string()),
        )
        .await;
    assert_eq!(a.code, 500);
    assert!(a.body.get("reason").is_none(), "a plain error: no reason");
    assert_eq!(
        a.body["message"],
        "failed to create typed patch object (default/applied; apps/v1, Kind=Deployment): .spec.foo: field not declared in schema"
    );
}

#[tokio::test]
async fn deployment_rules_answer_422_with_causes() {
    let (_sim, raw) = start().await;
    let mut d = deployment("web");
    d["spec"].as_object_mut().unwrap().remove("selector");
    d["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    d["spec"]["replicas"] = json!(-1);
    let a = raw.post(DEPLOYMENTS, &d).await;
    assert_eq!(a.code, 422);
    assert_eq!(a.body["reason"], "Invalid");
    assert_eq!(
        a.body["message"],
        r#"Deployment.apps "web" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.selector: Required value, spec.template.spec.containers[0].image: Required value]"#
    );
    assert_eq!(a.body["details"]["group"], "apps");
    assert_eq!(a.body["details"]["kind"], "Deployment");
    assert_eq!(a.body["details"]["name"], "web");
    assert_eq!(
        a.body["details"]["causes"][1],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.selector"})
    );

    let bad_type = raw
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            Some(
                deployment("typed")
                    .to_string()
                    .replace(r#""spec":{"#, r#""spec":{"replicas":"three","#),
            ),
        )
        .await;
    assert_eq!(bad_type.code, 400);
    let msg = bad_type.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with(r#"Deployment in version "v1" cannot be handled as a Deployment: "#)
            && msg.contains("spec.replicas"),
        "{msg}"
    );
}

#[tokio::test]
async fn secret_and_configmap_contents_are_checked() {
    let (_sim, raw) = start().await;
    let bad_b64 = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"key":"not base64!"}});
    let a = raw.post("/api/v1/namespaces/default/secrets", &bad_b64).await;
    assert_eq!(a.code, 400);
    assert_eq!(
        a.body["message"],
        r#"Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 3"#
    );
    let bad_key = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a b":"1"}});
    let a = raw.post("/api/v1/namespaces/default/configmaps", &bad_key).await;
    assert_eq!(a.code, 422);
    assert_eq!(a.body["details"]["causes"][0]["field"], "data[a b]");
    assert_eq!(a.body["details"]["causes"][0]["reason"], "FieldValueInvalid");
    let tls = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"t"},"type":"kubernetes.io/tls","data":{}});
    let a = raw.post("/api/v1/namespaces/default/secrets", &tls).await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["message"],
        r#"Secret "t" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]"#
    );
}

#[tokio::test]
async fn object_names_follow_upstream_rules() {
    let (_sim, raw) = start().await;
    let ns = raw
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a.b"}}),
        )
        .await;
    assert_eq!(ns.code, 422);
    assert_eq!(
        ns.body["message"],
        "Namespace \"a.b\" is invalid: metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    );
    let svc = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"1web"},"spec":{"ports":[{"port":80}]}});
    let a = raw.post("/api/v1/namespaces/default/services", &svc).await;
    assert_eq!(a.code, 422);
    assert!(
        a.body["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("a DNS-1035 label must consist of lower case alphanumeric characters")
    );
    let cm = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}});
    let a = raw.post("/api/v1/namespaces/default/configmaps", &cm).await;
    assert_eq!(a.code, 422);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("a lowercase RFC 1123 subdomain")
    );
    let ok = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"good.name-1"}});
    assert_eq!(raw.post("/api/v1/namespaces/default/configmaps", &ok).await.code, 201);
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let (_sim, raw) = start().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"level":"info"}});
    let mut first = raw.post(cms, &cm).await.body;
    first["data"]["level"] = json!("debug");
    assert_eq!(raw.put(&format!("{cms}/settings"), &first).await.code, 200);
    // The same resourceVersion again: someone else's write came in between.
    first["data"]["level"] = json!("warn");
    let a = raw.put(&format!("{cms}/settings"), &first).await;
    assert_eq!(a.code, 409);
    assert_eq!(a.body["reason"], "Conflict");
    assert_eq!(
        a.body["message"],
        r#"Operation cannot be fulfilled on configmaps "settings": the object has been modified; please apply your changes to the latest version and try again"#
    );
    assert_eq!(a.body["details"], json!({"name": "settings", "kind": "configmaps"}));
    // A merge patch carrying a resourceVersion is a precondition too.
    let patch = json!({"metadata":{"resourceVersion": first["metadata"]["resourceVersion"]},"data":{"level":"warn"}});
    let a = raw
        .send(
            "PATCH",
            &format!("{cms}/settings"),
            "application/merge-patch+json",
            Some(patch.to_string()),
        )
        .await;
    assert_eq!(a.code, 409);
}

#[tokio::test]
async fn immutable_fields_are_refused_on_update() {
    let (_sim, raw) = start().await;
    assert_eq!(raw.post(DEPLOYMENTS, &deployment("web")).await.code, 201);
    let a = raw
        .update(&format!("{DEPLOYMENTS}/web"), |d| {
            d["spec"]["selector"]["matchLabels"]["tier"] = json!("front");
            d["spec"]["template"]["metadata"]["labels"]["tier"] = json!("front");
        })
        .await;
    assert_eq!(a.code, 422);
    assert_eq!(a.body["details"]["causes"][0]["field"], "spec.selector");
    assert!(
        a.body["message"].as_str().unwrap().ends_with("field is immutable"),
        "{}",
        a.body
    );

    let cms = "/api/v1/namespaces/default/configmaps";
    let cm =
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"frozen"},"immutable":true,"data":{"a":"1"}});
    assert_eq!(raw.post(cms, &cm).await.code, 201);
    let a = raw
        .update(&format!("{cms}/frozen"), |c| c["data"]["a"] = json!("2"))
        .await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["message"],
        "ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );

    let svcs = "/api/v1/namespaces/default/services";
    let svc = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
                     "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80}]}});
    assert_eq!(raw.post(svcs, &svc).await.code, 201);
    let a = raw
        .update(&format!("{svcs}/web"), |s| s["spec"]["clusterIP"] = json!("10.96.0.11"))
        .await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["message"],
        r#"Service "web" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.11": may not change once set"#
    );
}

#[tokio::test]
async fn crd_scope_is_immutable() {
    let (sim, raw) = start().await;
    install(
        &sim,
        &shared("crds/flux/kustomize.toolkit.fluxcd.io_kustomizations.v1.9.0.yaml"),
    )
    .await;
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/kustomizations.kustomize.toolkit.fluxcd.io";
    let a = raw.update(path, |crd| crd["spec"]["scope"] = json!("Cluster")).await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["message"],
        r#"CustomResourceDefinition.apiextensions.k8s.io "kustomizations.kustomize.toolkit.fluxcd.io" is invalid: spec.scope: Invalid value: "Cluster": field is immutable"#
    );
}

const KUSTOMIZATIONS: &str = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/default/kustomizations";

#[tokio::test]
async fn flux_kustomization_is_held_to_its_crd_schema_and_defaulted() {
    let (sim, raw) = start().await;
    install(
        &sim,
        &shared("crds/flux/kustomize.toolkit.fluxcd.io_kustomizations.v1.9.0.yaml"),
    )
    .await;
    let no_source = json!({"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization",
        "metadata":{"name":"apps"},"spec":{"interval":"ten minutes","prune":"yes"}});
    let a = raw.post(KUSTOMIZATIONS, &no_source).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(a.body["reason"], "Invalid");
    assert_eq!(
        a.body["message"],
        r#"Kustomization.kustomize.toolkit.fluxcd.io "apps" is invalid: [spec.sourceRef: Required value, spec.interval: Invalid value: "ten minutes": spec.interval in body should match '^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$', spec.prune: Invalid value: "string": spec.prune in body must be of type boolean: "string"]"#
    );
    let causes = a.body["details"]["causes"].as_array().unwrap();
    assert_eq!(
        causes[0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.sourceRef"})
    );
    assert_eq!(causes[2]["reason"], "FieldValueTypeInvalid");
    assert_eq!(a.body["details"]["group"], "kustomize.toolkit.fluxcd.io");

    let bad_kind = json!({"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization",
        "metadata":{"name":"apps"},"spec":{"interval":"10m","prune":true,"sourceRef":{"kind":"HelmRepository","name":"x"}}});
    let a = raw.post(KUSTOMIZATIONS, &bad_kind).await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["details"]["causes"][0]["message"],
        r#"Unsupported value: "HelmRepository": supported values: "OCIRepository", "GitRepository", "Bucket", "ExternalArtifact""#
    );
    assert_eq!(a.body["details"]["causes"][0]["reason"], "FieldValueNotSupported");

    let good = json!({"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization",
        "metadata":{"name":"apps"},"spec":{"interval":"10m","prune":true,"sourceRef":{"kind":"GitRepository","name":"flux-system"}}});
    let a = raw.post(KUSTOMIZATIONS, &good).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.body["spec"]["force"], false, "the CRD's default is applied");
    assert_eq!(
        raw.get(&format!("{KUSTOMIZATIONS}/apps")).await.body["spec"]["force"],
        false
    );
}

const POOLS: &str = "/apis/cilium.io/v2/ciliumloadbalancerippools";

#[tokio::test]
async fn cilium_ip_pool_unknown_fields_and_formats_are_refused() {
    let (sim, raw) = start().await;
    install(&sim, &shared("cilium/ciliumloadbalancerippools.yaml")).await;
    let pool = |blocks: Value| {
        json!({"apiVersion":"cilium.io/v2","kind":"CiliumLoadBalancerIPPool","metadata":{"name":"lb"},
               "spec":{"blocks": blocks}})
    };
    let a = raw
        .post(
            &format!("{POOLS}?fieldValidation=Strict"),
            &pool(json!([{"cidr":"10.0.0.0/24","first":"10.0.0.1"}])),
        )
        .await;
    assert_eq!(a.code, 400);
    assert_eq!(
        a.body["message"],
        r#"CiliumLoadBalancerIPPool in version "v2" cannot be handled as a CiliumLoadBalancerIPPool: strict decoding error: unknown field "spec.blocks[0].first""#
    );
    let a = raw.post(POOLS, &pool(json!([{"cidr":"10.0.0.0/33"}]))).await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["message"],
        r#"CiliumLoadBalancerIPPool.cilium.io "lb" is invalid: spec.blocks[0].cidr: Invalid value: "10.0.0.0/33": spec.blocks[0].cidr in body must be of type cidr: "10.0.0.0/33""#
    );
    let a = raw.post(POOLS, &pool(json!([{"cidr":"10.0.0.0/24"}]))).await;
    assert_eq!(a.code, 201, "{}", a.body);
}

async fn eventually(raw: &Raw, path: &str, want: u16) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = raw.get(path).await;
        if a.code == want || tokio::time::Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn namespace_deletion_terminates_waits_for_finalizers_then_removes_it() {
    let (_sim, raw) = start().await;
    let ns = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"doomed"}});
    assert_eq!(raw.post("/api/v1/namespaces", &ns).await.code, 201);
    let cms = "/api/v1/namespaces/doomed/configmaps";
    let held =
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}});
    assert_eq!(raw.post(cms, &held).await.code, 201);

    let a = raw
        .send("DELETE", "/api/v1/namespaces/doomed", "application/json", None)
        .await;
    assert_eq!(a.code, 200);
    assert_eq!(a.body["status"]["phase"], "Terminating");
    assert!(a.body["metadata"]["deletionTimestamp"].is_string());

    let late = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"late"}});
    let a = raw.post(cms, &late).await;
    assert_eq!(a.code, 403);
    assert_eq!(a.body["reason"], "Forbidden");
    assert_eq!(
        a.body["message"],
        r#"configmaps "late" is forbidden: unable to create new content in namespace doomed because it is being terminated"#
    );
    assert_eq!(a.body["details"]["causes"][0]["reason"], "NamespaceTerminating");
    assert_eq!(a.body["details"]["causes"][0]["field"], "metadata.namespace");

    // The held object stays, marked for deletion, and so does its namespace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut cm = raw.get(&format!("{cms}/held")).await.body;
    while cm["metadata"]["deletionTimestamp"].is_null() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cm = raw.get(&format!("{cms}/held")).await.body;
    }
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    assert_eq!(raw.get("/api/v1/namespaces/doomed").await.code, 200);

    // No finalizer may be added now; removing the last one lets it go, then the namespace.
    let mut more = cm.clone();
    more["metadata"]["finalizers"] = json!(["example.com/hold", "example.com/other"]);
    let a = raw.put(&format!("{cms}/held"), &more).await;
    assert_eq!(a.code, 422);
    assert_eq!(a.body["details"]["causes"][0]["reason"], "FieldValueForbidden");
    let a = raw
        .update(&format!("{cms}/held"), |c| c["metadata"]["finalizers"] = json!([]))
        .await;
    assert_eq!(a.code, 200);
    assert_eq!(raw.get(&format!("{cms}/held")).await.code, 404);
    assert_eq!(eventually(&raw, "/api/v1/namespaces/doomed", 404).await.code, 404);
}

const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes";

#[tokio::test]
async fn gateway_api_route_gets_its_defaults_and_its_bounds_enforced() {
    let (sim, raw) = start().await;
    install(
        &sim,
        &shared("crds/gateway-api-v1.6.1/gateway.networking.k8s.io_httproutes.yaml"),
    )
    .await;
    let route = |port: u32| {
        json!({"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"web"},
               "spec":{"parentRefs":[{"name":"gw"}],"rules":[{"backendRefs":[{"name":"web","port":port}]}]}})
    };
    let a = raw.post(ROUTES, &route(70000)).await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["message"],
        r#"HTTPRoute.gateway.networking.k8s.io "web" is invalid: spec.rules[0].backendRefs[0].port: Invalid value: 70000: spec.rules[0].backendRefs[0].port in body should be less than or equal to 65535"#
    );
    let a = raw.post(ROUTES, &route(80)).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let spec = &a.body["spec"];
    assert_eq!(spec["parentRefs"][0]["group"], "gateway.networking.k8s.io");
    assert_eq!(spec["parentRefs"][0]["kind"], "Gateway");
    assert_eq!(
        spec["rules"][0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"}}])
    );
    assert_eq!(spec["rules"][0]["backendRefs"][0]["weight"], 1);
}

#[tokio::test]
async fn the_products_apply_reports_the_apiservers_validation_message_without_retrying() {
    let (sim, _raw) = start().await;
    let crd = shared("crds/flux/kustomize.toolkit.fluxcd.io_kustomizations.v1.9.0.yaml");
    install(&sim, &crd).await;
    let bad = r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: default}
spec: {interval: 10m, prune: true}
"#;
    let client = Client::from_kubeconfig_yaml(sim.admin_kubeconfig(), "sim admin kubeconfig")
        .await
        .unwrap();
    sim.clear_requests();
    let err = apply_manifests(&client, bad, &ApplyOpts::default()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Kustomization default/apps"), "{msg}");
    assert!(
        msg.contains(r#"Kustomization.kustomize.toolkit.fluxcd.io "apps" is invalid: spec.sourceRef: Required value"#),
        "{msg}"
    );
    let patches = sim
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/kustomizations/apps"))
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert_eq!(patches, [422], "a 422 is final");
    assert!(
        sim.object("kustomize.toolkit.fluxcd.io", "kustomizations", "default", "apps")
            .is_none()
    );
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;

#[tokio::test]
async fn defaults_added_to_a_crd_later_show_on_read() {
    let (sim, raw) = start().await;
    install(&sim, WIDGET_CRD).await;
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let w = json!({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{}});
    assert_eq!(raw.post(widgets, &w).await.code, 201);
    assert!(
        raw.get(&format!("{widgets}/w")).await.body["spec"]
            .get("size")
            .is_none()
    );
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com";
    let a = raw
        .update(crd, |c| {
            c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"]["default"] =
                json!(3)
        })
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(raw.get(&format!("{widgets}/w")).await.body["spec"]["size"], 3);
    let list = raw.get(widgets).await.body;
    assert_eq!(list["items"][0]["spec"]["size"], 3);
}
