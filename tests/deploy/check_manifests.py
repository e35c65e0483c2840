#!/usr/bin/python3
"""Checks deploy/kubernetes.yaml with the Kubernetes API's own typed models (python3-kubernetes,
Debian's package), plus what ties the manifests to the server and the image.

Each object is deserialised into its typed model (kubernetes.client.ApiClient.deserialize:
required fields, types), after a strict walk that refuses any field the model does not have
(the library itself ignores unknown fields, which would hide a typo such as `readinesProbe`).
python3-kubernetes 22.6 models Kubernetes 1.22; two later stable additions are checked here by
their published schema: Probe.grpc (GA in 1.27: {port: int, service: string}) and
autoscaling/v2 (GA in 1.23), whose HorizontalPodAutoscaler has exactly v2beta2's schema.

Then: the ConfigMap's flags are accepted by the real loramux_server (it starts with them and
prints `listening on`, then drains on SIGTERM); every port the probes and Service name exists;
the Deployment runs as the image's user with a read-only root filesystem, its grace period
exceeds --drain_timeout_s; the PodDisruptionBudget and HorizontalPodAutoscaler select and
target the Deployment; every metric the Prometheus rules use exists in server/metrics.cc.

Usage: check_manifests.py --build_dir BUILD. Prints one line per object; exits 1 on a problem.
"""

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

import yaml
from kubernetes import client as k8s

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBLEMS = []

# (apiVersion, kind) -> the typed model.
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    # autoscaling/v2 (Kubernetes >= 1.23) has v2beta2's schema; the library predates it.
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2beta2HorizontalPodAutoscaler",
}
# Fields newer than the library: (model, json key) -> {json key: python type} of the value,
# every key of which is required unless listed in OPTIONAL.
EXTRA_FIELDS = {("V1Probe", "grpc"): {"port": int, "service": str}}
OPTIONAL = {("V1Probe", "grpc"): {"service"}}


def problem(message):
    PROBLEMS.append(message)
    print("  PROBLEM: " + message)


def strict_walk(data, type_name, path):
    """Refuses keys `type_name`'s model lacks, recursively through lists, dicts and models."""
    if data is None:
        return
    if type_name.startswith("list["):
        if not isinstance(data, list):
            return problem("%s: expected a list" % path)
        for i, item in enumerate(data):
            strict_walk(item, type_name[5:-1], "%s[%d]" % (path, i))
        return
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            return problem("%s: expected a map" % path)
        value_type = type_name[5:-1].split(", ", 1)[1]
        for key, value in data.items():
            strict_walk(value, value_type, "%s.%s" % (path, key))
        return
    model = getattr(k8s, type_name, None)
    if model is None:  # str, int, bool, object (int-or-string, quantities), datetime
        return
    if not isinstance(data, dict):
        return problem("%s: expected an object (%s)" % (path, type_name))
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    for key, value in data.items():
        extra = EXTRA_FIELDS.get((type_name, key))
        if extra is not None:
            check_extra(value, extra, OPTIONAL.get((type_name, key), set()),
                        "%s.%s" % (path, key))
        elif key not in by_json:
            problem("%s: unknown field `%s` for %s" % (path, key, type_name))
        else:
            strict_walk(value, model.openapi_types[by_json[key]], "%s.%s" % (path, key))


def check_extra(value, schema, optional, path):
    if not isinstance(value, dict):
        return problem("%s: expected an object" % path)
    for key, item in value.items():
        if key not in schema:
            problem("%s: unknown field `%s`" % (path, key))
        elif not isinstance(item, schema[key]):
            problem("%s.%s: expected %s" % (path, key, schema[key].__name__))
    for key in set(schema) - optional - set(value):
        problem("%s: missing required field `%s`" % (path, key))


def without_extras(data, type_name):
    """A copy of `data` without EXTRA_FIELDS (which the library's models cannot hold)."""
    if isinstance(data, list):
        return [without_extras(d, type_name) for d in data]
    if not isinstance(data, dict):
        return data
    return {k: without_extras(v, type_name) for k, v in data.items()
            if not any(k == key for (_, key) in EXTRA_FIELDS)}


class _Response:  # what ApiClient.deserialize reads
    def __init__(self, obj):
        self.data = json.dumps(obj)


def typed(obj):
    model = MODELS.get((obj.get("apiVersion"), obj.get("kind")))
    name = "%s/%s" % (obj.get("kind"), obj.get("metadata", {}).get("name"))
    if model is None:
        problem("%s: no typed model for apiVersion %s kind %s" % (name, obj.get("apiVersion"),
                                                                   obj.get("kind")))
        return None
    strict_walk(obj, model, name)
    try:
        # Probes' `grpc` removed here: the strict walk checked it.
        return k8s.ApiClient().deserialize(_Response(without_extras(obj, model)), model)
    except (ValueError, TypeError) as e:
        problem("%s: %s" % (name, e))
        return None


def check_flags(flags_text, build_dir):
    """Starts the real server with the ConfigMap's flags (paths moved to a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="loramux-flags-") as tmp:
        token = os.path.join(tmp, "admin-token")
        with open(token, "w") as f:
            f.write("s3cret\n")
        flagfile = os.path.join(tmp, "flags")
        with open(flagfile, "w") as f:
            f.write(flags_text)
        overrides = ["--model_dir=" + os.path.join(REPO, "tests", "data", "llama-tiny"),
                     "--adapter_store=" + os.path.join(tmp, "store"),
                     "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                     "--admin_token_file=" + token, "--drain_timeout_s=2"]
        server = subprocess.Popen([os.path.join(build_dir, "loramux_server"),
                                   "--flagfile=" + flagfile] + overrides,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, deadline = b"", time.monotonic() + 120
        try:
            while b"listening on" not in out and time.monotonic() < deadline:
                if select.select([server.stdout], [], [], 1.0)[0]:
                    chunk = os.read(server.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    out += chunk
            if b"listening on" not in out:
                server.kill()
                problem("loramux_server refused the ConfigMap's flags:\n" +
                        server.communicate(timeout=30)[1].decode(errors="replace")[-2000:])
                return
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
            if code != 0:
                problem("loramux_server with the ConfigMap's flags exited %d on SIGTERM" % code)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


def flag_value(flags_text, name):
    for line in flags_text.splitlines():
        if line.strip().startswith("--%s=" % name):
            return line.strip().split("=", 1)[1]
    return None


def check_deployment(objects, build_dir):
    by_kind = {}
    for raw, model in objects:
        by_kind.setdefault(raw["kind"], []).append((raw, model))
    deployment_raw, deployment = by_kind["Deployment"][0]
    config_raw = by_kind["ConfigMap"][0][0]
    flags = config_raw["data"]["flags"]
    check_flags(flags, build_dir)
    pod = deployment.spec.template.spec
    container = pod.containers[0]
    ports = {p.name: p.container_port for p in container.ports}
    listen = flag_value(flags, "listen")
    metrics_listen = flag_value(flags, "metrics_listen")
    if listen is None or int(listen.rsplit(":", 1)[1]) != ports.get("grpc"):
        problem("--listen (%s) does not match the grpc containerPort %s" % (listen, ports))
    if metrics_listen is None or int(metrics_listen.rsplit(":", 1)[1]) != ports.get("metrics"):
        problem("--metrics_listen (%s) does not match the metrics containerPort" % metrics_listen)
    raw_container = deployment_raw["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = raw_container.get(probe, {}).get("grpc")
        if grpc_probe is None or grpc_probe.get("port") != ports.get("grpc"):
            problem("%s must be a gRPC health probe on the grpc port" % probe)
    drain = float(flag_value(flags, "drain_timeout_s") or 30)
    if not pod.termination_grace_period_seconds or pod.termination_grace_period_seconds <= drain:
        problem("terminationGracePeriodSeconds must exceed --drain_timeout_s (%s)" % drain)
    if not (pod.security_context and pod.security_context.run_as_non_root):
        problem("the pod must run as non-root")
    with open(os.path.join(REPO, "Dockerfile")) as f:
        uid = re.search(r"useradd .*--uid (\d+)", f.read()).group(1)
    if str(pod.security_context.run_as_user) != uid:
        problem("runAsUser %s is not the image's user (uid %s)" % (
            pod.security_context.run_as_user, uid))
    if not (container.security_context and container.security_context.read_only_root_filesystem):
        problem("the container must have a read-only root filesystem")
    mounts = {m.mount_path for m in container.volume_mounts}
    for needed in ("/var/lib/loramux/store", flag_value(flags, "model_dir"), "/tmp"):
        if needed not in mounts:
            problem("no volume mounted at %s" % needed)
    if not (container.resources and container.resources.requests):
        problem("the container needs resource requests (the HPA scales on CPU utilisation)")
    claims = {v.persistent_volume_claim.claim_name: v for v in pod.volumes
              if v.persistent_volume_claim}
    for raw, pvc in by_kind["PersistentVolumeClaim"]:
        if pvc.metadata.name == "loramux-store" and "ReadWriteMany" not in pvc.spec.access_modes:
            problem("the shared store needs a ReadWriteMany volume")
        if pvc.metadata.name not in claims:
            problem("PersistentVolumeClaim %s is not used" % pvc.metadata.name)
    labels = deployment.spec.template.metadata.labels
    service = by_kind["Service"][0][1]
    if any(labels.get(k) != v for k, v in service.spec.selector.items()):
        problem("the Service does not select the Deployment's pods")
    for port in service.spec.ports:
        if port.target_port not in ports:
            problem("Service port %s targets %s, not a named container port" % (
                port.name, port.target_port))
    pdb = by_kind["PodDisruptionBudget"][0][1]
    if any(labels.get(k) != v for k, v in pdb.spec.selector.match_labels.items()):
        problem("the PodDisruptionBudget does not select the Deployment's pods")
    hpa = by_kind["HorizontalPodAutoscaler"][0][1]
    if (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) != \
            ("Deployment", deployment.metadata.name):
        problem("the HorizontalPodAutoscaler does not target the Deployment")
    ingress = by_kind["Ingress"][0][1]
    hash_by = ingress.metadata.annotations.get("nginx.ingress.kubernetes.io/upstream-hash-by")
    if hash_by != "$http_x_loramux_adapter":
        problem("the Ingress must hash on the x-loramux-adapter header")


def check_rule_metrics():
    """Every loramux_* series the rules use exists in server/metrics.cc."""
    del PROBLEMS[:]
    with open(os.path.join(REPO, "server", "metrics.cc")) as f:
        known = set(re.findall(r'"(loramux_[a-z_]+)"', f.read()))
    with open(os.path.join(REPO, "deploy", "loramux_rules.yml")) as f:
        rules = yaml.safe_load(f)
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= set(re.findall(r"\b(loramux_[a-z_]+)", rule["expr"]))
    for name in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in known and base not in known:
            problem("deploy/loramux_rules.yml uses %s, which server/metrics.cc does not export"
                    % name)
    print("rules: %d metric names, all exported by server/metrics.cc" % len(used))


def check(documents, build_dir):
    """Runs every check on the parsed documents; returns the problems found."""
    del PROBLEMS[:]
    objects = []
    for raw in documents:
        model = typed(raw)
        print("%s/%s: %s" % (raw.get("kind"), raw.get("metadata", {}).get("name"),
                             type(model).__name__ if model is not None else "INVALID"))
        if model is not None:
            objects.append((raw, model))
    kinds = {raw["kind"] for raw, _ in objects}
    for needed in ("Deployment", "Service", "PersistentVolumeClaim", "ConfigMap",
                   "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"):
        if needed not in kinds:
            problem("deploy/kubernetes.yaml has no valid %s" % needed)
    if not PROBLEMS:
        check_deployment(objects, build_dir)
    return list(PROBLEMS)


def deployment_container(documents):
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


# Broken copies of the manifests the checker must refuse (so it is known to be able to fail).
MUTATIONS = {
    "a misspelt field": lambda docs: deployment_container(docs).update(
        readinesProbe=deployment_container(docs).pop("readinessProbe")),
    "a container without its required name": lambda docs: deployment_container(docs).pop("name"),
    "an unknown field in a gRPC probe": lambda docs: deployment_container(docs)["livenessProbe"][
        "grpc"].update(path="/healthz"),
    "a string where an integer belongs": lambda docs: next(
        d for d in docs if d["kind"] == "HorizontalPodAutoscaler")["spec"].update(
            maxReplicas="twelve"),
    "a grace period shorter than the drain": lambda docs: next(
        d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=10),
    "a flag the server does not know": lambda docs: next(
        d for d in docs if d["kind"] == "ConfigMap")["data"].update(
            flags="--model_dir=/models\n--no_such_flag=1\n"),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    args = parser.parse_args()
    with open(os.path.join(REPO, "deploy", "kubernetes.yaml")) as f:
        text = f.read()
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    problems = check(documents, args.build_dir)
    for what, mutate in MUTATIONS.items():
        print("-- mutation: %s" % what)
        broken = [d for d in yaml.safe_load_all(text) if d is not None]
        mutate(broken)
        if not check(broken, args.build_dir):
            problems.append("the checker accepted manifests with %s" % what)
    check_rule_metrics()
    problems += PROBLEMS
    if problems:
        print("%d problem(s) in the deployment manifests:\n  %s" % (len(problems),
                                                                   "\n  ".join(problems)))
        return 1
    print("deployment manifests: %d objects checked, no problems; %d broken copies refused"
          % (len(documents), len(MUTATIONS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
