#!/usr/bin/env python3
"""Checks helm/canopy with the real tools, for every values file under helm/canopy/ci/:

- `helm lint --strict`, then `helm template` for the oldest and the newest Kubernetes the chart
  targets;
- every core object against Kubernetes' OpenAPI schema (kubernetes-validate, strict: unknown
  fields and wrong types fail);
- every custom resource (ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject, Certificate)
  against its project's CRD schema (@kubernetes-models validators) and its TypeScript type
  (`tsc --strict`: unknown fields fail, which the CRD validators let through);
- the PrometheusRule's groups with `promtool check rules`, and equal to dashboards/' rules file;
  the Grafana ConfigMaps equal to dashboards/grafana/*.json;
- what the chart promises: pods non-root with a read-only root, no capabilities, RuntimeDefault
  seccomp; executors register at the driver Service's name and port; probes on the metrics port;
  the grace period matching the executor's; credentials from a Secret; the autoscalers owning
  the replicas;
- values the schema or the chart must refuse, with their messages;
- the packaged chart (symlinked dashboards resolved) renders the same objects.

Usage: check_chart.py --helm HELM --node-dir DIR --promtool PROMTOOL
Prints "ok: ..." / "FAILED: ..." and ends with "chart: N passed, N failed".
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml
from tally import check, summary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "canopy"
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
API_VERSIONS = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
    "cert-manager.io/v1/Certificate",
]
CUSTOM = {
    "ServiceMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    "PodMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor",
    "PrometheusRule": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
    "ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
    "Certificate": "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate",
}


def helm(args, *cmd):
    return subprocess.run([args.helm, *cmd], text=True, capture_output=True)


def template(args, chart, values_file=None, kube_version="1.30.0", extra=()):
    cmd = ["template", "canopy", str(chart), "--namespace", "ml", "--kube-version", kube_version]
    for api in API_VERSIONS:
        cmd += ["--api-versions", api]
    if values_file:
        cmd += ["-f", str(values_file)]
    return helm(args, *cmd, *extra)


def objects_of(rendered):
    return [d for d in yaml.safe_load_all(rendered) if d]


def validate_core(name, objs, version):
    problems = []
    for obj in objs:
        if obj["kind"] in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {'.'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{obj['kind']} {obj['apiVersion']}: no schema in Kubernetes {version}")
    core = sum(1 for o in objs if o["kind"] not in CUSTOM)
    check(not problems, f"{name}: {core} core objects valid for Kubernetes {version} (strict)", "; ".join(problems))


def validate_custom(args, name, objs, work):
    custom = [o for o in objs if o["kind"] in CUSTOM]
    if not custom:
        return
    data = work / f"{name}.json"
    data.write_text(json.dumps(custom))
    # Next to node_modules: ES modules resolve packages from the script's own directory.
    script = Path(args.node_dir) / "validate-custom-resources.mjs"
    script.write_text((ROOT / "helm" / "tests" / "validate-custom-resources.mjs").read_text())
    result = subprocess.run(["node", str(script), str(data)], cwd=args.node_dir, text=True, capture_output=True)
    check(result.returncode == 0, f"{name}: {', '.join(o['kind'] for o in custom)} match their CRD schemas", result.stdout + result.stderr)
    # Excess-property checks of object literals: the CRD validators accept unknown fields.
    source = [f"import type {{ I{kind} }} from '{module}';" for kind, module in CUSTOM.items()]
    for i, obj in enumerate(custom):
        source.append(f"export const o{i}: I{obj['kind']} = {json.dumps(obj, indent=1)};")
    (Path(args.node_dir) / "chart.ts").write_text("\n".join(source) + "\n")
    (Path(args.node_dir) / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "target": "es2022", "module": "esnext",
                            "moduleResolution": "bundler", "skipLibCheck": True},
        "include": ["chart.ts"]}))
    result = subprocess.run(["node_modules/.bin/tsc", "-p", "tsconfig.json"], cwd=args.node_dir, text=True, capture_output=True)
    check(result.returncode == 0, f"{name}: custom resources type-check against @kubernetes-models' types (no unknown fields)",
          result.stdout + result.stderr)


def check_monitoring(args, name, objs, work):
    for rule in [o for o in objs if o["kind"] == "PrometheusRule"]:
        shipped = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "rules" / "canopy.rules.yml").read_text())
        check(rule["spec"] == shipped, f"{name}: PrometheusRule {rule['metadata']['name']} is dashboards/prometheus/rules/canopy.rules.yml")
        path = work / f"{name}-rules.yml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        result = subprocess.run([args.promtool, "check", "rules", str(path)], text=True, capture_output=True)
        check(result.returncode == 0, f"{name}: promtool check rules passes on the PrometheusRule's groups", result.stdout + result.stderr)
    boards = [o for o in objs if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]]
    if boards:
        shipped = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards" / "grafana").glob("*.json")}
        rendered = {key: json.loads(value) for b in boards for key, value in b["data"].items()}
        check(rendered == shipped, f"{name}: Grafana ConfigMaps hold dashboards/grafana/*.json ({', '.join(sorted(rendered))})")


def check_promises(name, objs, values):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    pods = [(o["kind"], o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objs if o["kind"] in ("Job", "Deployment")]
    pods += [("Pod", o["metadata"]["name"], o["spec"]) for o in by_kind.get("Pod", [])]
    problems = []
    for kind, pod_name, spec in pods:
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{kind}/{pod_name}: pod securityContext {psc}")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                problems.append(f"{kind}/{pod_name}/{c['name']}: container securityContext {sc}")
            if "resources" not in c:
                problems.append(f"{kind}/{pod_name}/{c['name']}: no resources")
    check(not problems, f"{name}: every pod non-root, read-only root, no capabilities, RuntimeDefault seccomp, resources set", problems)

    deployment = by_kind["Deployment"][0]
    spec = deployment["spec"]["template"]["spec"]
    executor = spec["containers"][0]
    args = executor["args"]
    driver_service = next(s for s in by_kind["Service"] if s["metadata"]["labels"]["app.kubernetes.io/component"] == "driver")
    grpc = next(p["port"] for p in driver_service["spec"]["ports"] if p["name"] == "grpc")
    check(f"--driver={driver_service['metadata']['name']}:{grpc}" in args,
          f"{name}: executors register at the driver Service ({driver_service['metadata']['name']}:{grpc})", args)
    driver_pod = by_kind["Job"][0]["spec"]["template"]["spec"]
    driver_args = driver_pod["containers"][0]["args"]
    driver_ports = {p["name"]: p["containerPort"] for p in driver_pod["containers"][0]["ports"]}
    check(f"--listen=0.0.0.0:{grpc}" in driver_args and driver_ports["grpc"] == grpc,
          f"{name}: the driver listens on the Service's target port", driver_args)
    data = values.get("data", {})
    reads = data.get("readBy") == "executors"

    def volume(pod):
        return next((v for v in pod.get("volumes", []) if v["name"] == "data"), None)

    def mount(container):
        return next((m for m in container.get("volumeMounts", []) if m["name"] == "data"), None)

    if reads:
        check("--read-by=executors" in driver_args, f"{name}: the driver lets the executors read their own rows", driver_args)
        check(volume(spec) == volume(driver_pod) is not None and mount(executor) == mount(driver_pod["containers"][0])
              and mount(executor)["readOnly"] is True,
              f"{name}: executors mount the driver's data volume read-only at the same path", spec.get("volumes"))
    else:
        check(volume(spec) is None and not any(a.startswith("--read-by") for a in driver_args),
              f"{name}: only the driver mounts the data", spec.get("volumes"))
    grace = next(int(a.split("=", 1)[1]) for a in args if a.startswith("--grace-seconds="))
    check(spec["terminationGracePeriodSeconds"] == grace + 10,
          f"{name}: terminationGracePeriodSeconds ({spec['terminationGracePeriodSeconds']}) is the executor's --grace-seconds + 10")
    metrics_port = next(p["containerPort"] for p in executor["ports"] if p["name"] == "metrics")
    probes = {k: executor[k]["httpGet"] for k in ("readinessProbe", "livenessProbe")}
    check(probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
          and all(p["port"] == "metrics" for p in probes.values()) and f"--metrics-listen=0.0.0.0:{metrics_port}" in args,
          f"{name}: executor probes /readyz and /healthz on the port --metrics-listen serves", probes)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    check(annotations.get("cluster-autoscaler.kubernetes.io/safe-to-evict") == "true", f"{name}: executors are safe to evict")
    autoscaled = bool(by_kind.get("HorizontalPodAutoscaler") or by_kind.get("ScaledObject"))
    check(("replicas" in deployment["spec"]) != autoscaled,
          f"{name}: " + ("the autoscaler owns the replicas" if autoscaled else f"{deployment['spec'].get('replicas')} replicas"))
    for scaler in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", []):
        check(scaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"],
              f"{name}: {scaler['kind']} scales Deployment {deployment['metadata']['name']}")

    secrets = {s["metadata"]["name"] for s in by_kind.get("Secret", [])}
    auth = values.get("auth", {}).get("token", {})
    tls = values.get("tls", {})
    for kind, pod_name, pod in pods[:2]:
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        has_token = "CANOPY_AUTH_TOKEN_FILE" in env and "auth" in volumes
        has_tls = all(k in env for k in ("CANOPY_TLS_CERT", "CANOPY_TLS_KEY", "CANOPY_TLS_CA", "CANOPY_TLS_SERVER_NAME"))
        check(has_token == auth.get("enabled", True) and has_tls == tls.get("enabled", False),
              f"{name}: {kind} {pod_name} authenticates with" + (" a token" if has_token else "") + (" mutual TLS" if has_tls else ""), env)
        if has_token:
            secret = volumes["auth"]["secret"]["secretName"]
            check(secret in secrets or secret == auth.get("existingSecret"), f"{name}: the token comes from Secret {secret}")
        if has_tls:
            secret = volumes["tls"]["secret"]["secretName"]
            certificates = [c["spec"]["secretName"] for c in by_kind.get("Certificate", [])]
            check(secret in certificates or secret == tls.get("existingSecret"), f"{name}: TLS files come from Secret {secret}")
    check(len(by_kind.get("NetworkPolicy", [])) == 2, f"{name}: NetworkPolicies for the driver and the executors")


def check_refusals(args):
    refused = [
        (["--set", "job.bogus=1"], "at '/job': additional properties 'bogus' not allowed"),
        (["--set", "executor.replicas=abc"], "at '/executor/replicas': got string, want null or integer"),
        (["--set", "job.command=fit"], "at '/job/command': value must be one of 'train', 'scale'"),
        (["--set", "ports.metrics=70000"], "at '/ports/metrics': maximum: got 70,000, want 65,535"),
        (["--set", "autoscaling.hpa.enabled=true,autoscaling.keda.enabled=true"], "autoscaling: enable either hpa or keda, not both"),
        (["--set", "auth.token.enabled=false"], "auth.token.enabled or tls.enabled: executors listen on the pod network"),
        (["--set", "tls.enabled=true"], "tls.enabled needs tls.existingSecret or tls.certManager.enabled"),
        (["--set", "data.source=hostPath,data.file=f.parquet"], "data.hostPath: the node directory that holds data.file"),
        (["--set", "job.minExecutors=5,job.maxExecutors=2"], "job.minExecutors must be at most job.maxExecutors"),
    ]
    for extra, message in refused:
        result = template(args, CHART, extra=extra)
        check(result.returncode != 0 and message in result.stderr, f"refused {' '.join(extra[1:])}: {message}",
              f"exit {result.returncode}: {result.stderr.strip()[-400:]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--helm", required=True)
    parser.add_argument("--node-dir", required=True)
    parser.add_argument("--promtool", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="canopy-chart-"))

    for values_file in sorted((CHART / "ci").glob("*.yaml")):
        name = values_file.stem
        values = yaml.safe_load(values_file.read_text()) or {}
        lint = helm(args, "lint", "--strict", str(CHART), "-f", str(values_file))
        check(lint.returncode == 0, f"{name}: helm lint --strict", lint.stdout + lint.stderr)
        objs = None
        for version in KUBE_VERSIONS:
            rendered = template(args, CHART, values_file, kube_version=version)
            if not check(rendered.returncode == 0, f"{name}: helm template for Kubernetes {version}", rendered.stderr):
                continue
            objs = objects_of(rendered.stdout)
            validate_core(name, objs, version)
        if objs is None:  # nothing rendered: the failures above say why
            continue
        validate_custom(args, name, objs, work)
        check_monitoring(args, name, objs, work)
        check_promises(name, objs, values)

    check_refusals(args)

    package = helm(args, "package", str(CHART), "--destination", str(work))
    if check(package.returncode == 0, "helm package", package.stderr):
        tgz = next(work.glob("canopy-*.tgz"))
        values_file = CHART / "ci" / "keda-values.yaml"
        from_dir, from_package = template(args, CHART, values_file), template(args, tgz, values_file)
        check(from_package.returncode == 0 and same_but_token(from_dir.stdout, from_package.stdout),
              f"the packaged chart {tgz.name} renders the same objects (dashboards and rules included)", from_package.stderr)

    return summary("chart")


def same_but_token(a, b):
    """Two renders are equal but for the generated token (random at every render without a cluster)."""
    def strip(objs):
        for o in objs:
            if o["kind"] == "Secret":
                o["data"] = {k: "<generated>" for k in o["data"]}
        return objs
    return strip(objects_of(a)) == strip(objects_of(b))


if __name__ == "__main__":
    sys.exit(main())
