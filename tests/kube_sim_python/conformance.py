"""The official Python Kubernetes client (PyPI `kubernetes`) against the
Kubernetes API simulator: one operation per invocation.

    python conformance.py KUBECONFIG OPERATION [CRD_FILE]

Exits 0 after printing "ok", non-zero with the failed assertion otherwise.
Driven by tests/kube_sim_python.rs, one Rust test per operation.
"""

import sys
import time

import yaml
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

NS = "default"


def configmap(name, labels=None, data=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data=data or {"colour": "blue"},
    )


def deployment():
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "registry.example/app:1", "env": [{"name": "A", "value": "1"}]},
                        {"name": "sidecar", "image": "registry.example/sidecar:1"},
                    ]
                },
            },
        },
    }


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"expected HTTP {code}, got {e.status}: {e.body}"
        return e
    raise AssertionError(f"expected HTTP {code}, the call succeeded")


def op_create(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
    created = v1.create_namespaced_config_map("team-a", configmap("cfg"))
    assert created.metadata.uid and created.metadata.resource_version, created.metadata
    e = expect_status(409, v1.create_namespaced_config_map, "team-a", configmap("cfg"))
    assert '"reason":"AlreadyExists"' in e.body.replace(" ", ""), e.body


def op_get(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(NS, configmap("cfg"))
    got = v1.read_namespaced_config_map("cfg", NS)
    assert got.data == {"colour": "blue"}, got.data
    assert got.kind == "ConfigMap" and got.api_version == "v1", (got.kind, got.api_version)


def op_list_by_label_selector(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(NS, configmap("a", {"app": "web"}))
    v1.create_namespaced_config_map(NS, configmap("b", {"app": "db"}))
    names = [c.metadata.name for c in v1.list_namespaced_config_map(NS, label_selector="app=web").items]
    assert names == ["a"], names
    names = sorted(c.metadata.name for c in v1.list_config_map_for_all_namespaces(label_selector="app").items)
    assert names == ["a", "b"], names


def op_apply_server_side(api):
    dyn = dynamic.DynamicClient(api)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": NS}, "data": {"k": "1"}}
    cms.server_side_apply(body=body, field_manager="python", namespace=NS)
    body["data"]["k"] = "2"
    cms.server_side_apply(body=body, field_manager="python", namespace=NS)
    assert cms.get(name="ssa", namespace=NS).data.k == "2"
    body["data"]["k"] = "3"
    e = expect_status(409, cms.server_side_apply, body=body, field_manager="other", namespace=NS)
    assert "conflict" in e.body.lower(), e.body
    rv = cms.get(name="ssa", namespace=NS).metadata.resourceVersion
    cms.server_side_apply(body=body, field_manager="python", namespace=NS, dry_run="All")
    after = cms.get(name="ssa", namespace=NS)
    assert after.metadata.resourceVersion == rv and after.data.k == "2", after


def op_patch_merge(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(NS, configmap("cfg"))
    v1.patch_namespaced_config_map(
        "cfg", NS, {"data": {"size": "L", "colour": None}}, _content_type="application/merge-patch+json"
    )
    assert v1.read_namespaced_config_map("cfg", NS).data == {"size": "L"}


def op_patch_json(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(NS, configmap("cfg"))
    v1.patch_namespaced_config_map("cfg", NS, [{"op": "replace", "path": "/data/colour", "value": "teal"}])
    assert v1.read_namespaced_config_map("cfg", NS).data == {"colour": "teal"}
    expect_status(
        422, v1.patch_namespaced_config_map, "cfg", NS, [{"op": "test", "path": "/data/colour", "value": "red"}]
    )


def op_patch_strategic(api):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    # A dict body on PATCH is sent as a strategic merge patch.
    apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}}}}
    )
    d = apps.read_namespaced_deployment("web", NS)
    containers = d.spec.template.spec.containers
    assert [c.name for c in containers] == ["app", "sidecar"], containers
    assert [e.name for e in containers[0].env] == ["A", "B"], containers[0].env


def op_label(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(NS, configmap("cfg"))
    v1.patch_namespaced_config_map("cfg", NS, {"metadata": {"labels": {"tier": "backend"}}})
    assert v1.read_namespaced_config_map("cfg", NS).metadata.labels == {"tier": "backend"}


def op_watch(api):
    v1 = client.CoreV1Api(api)
    rv = v1.list_namespaced_config_map(NS).metadata.resource_version
    v1.create_namespaced_config_map(NS, configmap("watched"))
    v1.delete_namespaced_config_map("watched", NS)
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", "watched"), ("DELETED", "watched")], seen


def op_delete_then_404(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(NS, configmap("cfg"))
    v1.delete_namespaced_config_map("cfg", NS)
    e = expect_status(404, v1.read_namespaced_config_map, "cfg", NS)
    assert '"reason":"NotFound"' in e.body.replace(" ", ""), e.body


def op_namespace_deletion(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed")))
    v1.create_namespaced_config_map("doomed", configmap("inside"))
    v1.delete_namespace("doomed")
    deadline = time.monotonic() + 30
    while True:
        try:
            v1.read_namespace("doomed")
        except ApiException as e:
            assert e.status == 404, e
            break
        assert time.monotonic() < deadline, "the namespace was never deleted"
        time.sleep(0.1)
    expect_status(404, v1.read_namespaced_config_map, "inside", "doomed")


def wait_established(api, name):
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + 30
    while True:
        crd = ext.read_custom_resource_definition(name)
        conds = {c.type: c.status for c in (crd.status.conditions or [])} if crd.status else {}
        if conds.get("Established") == "True":
            return
        assert time.monotonic() < deadline, f"{name} never became Established: {conds}"
        time.sleep(0.1)


def create_crd(api, crd_file):
    with open(crd_file) as f:
        crd = yaml.safe_load(f)
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    return crd["metadata"]["name"]


def op_wait_for_crd_established(api, crd_file):
    wait_established(api, create_crd(api, crd_file))


def op_create_custom_resource(api, crd_file):
    wait_established(api, create_crd(api, crd_file))
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "platform"},
        "spec": {"interval": "1m", "url": "https://git.example.invalid/platform.git", "ref": {"branch": "main"}},
    }
    custom.create_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", NS, "gitrepositories", body)
    got = custom.get_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", NS, "gitrepositories", "platform")
    assert got["spec"]["url"] == body["spec"]["url"], got
    listed = custom.list_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", NS, "gitrepositories")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["platform"], listed


def main():
    kubeconfig, operation = sys.argv[1], sys.argv[2]
    api = config.new_client_from_config(config_file=kubeconfig)
    fn = globals()[f"op_{operation}"]
    if fn.__code__.co_argcount == 2:
        fn(api, sys.argv[3])
    else:
        fn(api)
    print("ok")


if __name__ == "__main__":
    main()
