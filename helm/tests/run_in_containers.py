#!/usr/bin/env python3
"""Runs the chart's rendered workloads as containers from the built image, as a kubelet would.

No Kubernetes API server can run here, so this harness reads the rendered Job (driver) and
Deployment (executors) and starts their containers with podman: the same command, arguments,
environment, ports, user, read-only root, dropped capabilities and volumes (Secret and ConfigMap
data from the rendered objects, emptyDirs, the hostPath of the data). The containers share one
network on which the driver answers at its Service's name, as Kubernetes DNS would. Probes are
the rendered httpGet probes, sent to each container's address.

Scenarios, each checking the model's SHA-256 against an in-process run on the host:
  1. the Deployment's replicas register, the job completes;
  2. one executor starts the job; after the first tree level, executors are added up to the
     driver's wanted count (read from its metrics port, as an autoscaler would) and the first one
     is stopped as Kubernetes stops a pod (SIGTERM, SIGKILL after terminationGracePeriodSeconds):
     it hands its partitions back and exits 0, and the model does not change;
  3. as 1, with mutual TLS (one certificate for every pod, as tls.existingSecret) and the token;
  4. as 2, with data.readBy executors: every executor mounts the data volume and reads its own
     partitions (joiners read what moves to them), and no partition is shipped.

Usage: run_in_containers.py --helm HELM --image IMAGE --bin-dir DIR
Prints "ok: ..." / "FAILED: ..." lines and ends with "containers: N passed, N failed".
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from tally import check, summary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "canopy"
RELEASE = "canopy"
NETWORK = f"canopy-test-{os.getpid()}"
DATA_ROWS = 200_000
TREE_ARGS = ["--max-depth", "8"]
# Each histogram task of an executor sleeps this long, so the job lasts long enough to change it.
SLOW_EXECUTOR_ARGS = ["--inject-task-delay-ms", "250"]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def podman(*args, check=True):
    result = subprocess.run(["podman", *args], text=True, capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result


class Pod:
    """One pod of a rendered workload, as a container on the test network."""

    def __init__(self, name, pod_spec, objects, work, image, aliases=()):
        self.name = name
        self.spec = pod_spec
        self.container = pod_spec["containers"][0]
        self.work = work / name
        self.volume_dirs = {}
        self.create(objects, image, aliases)

    def create(self, objects, image, aliases):
        spec, c = self.spec, self.container
        pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
        user, group = sc.get("runAsUser", pod_sc.get("runAsUser")), sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        cmd = ["create", "--name", self.name, "--network", NETWORK, "--hostname", self.name]
        for alias in aliases:
            cmd += ["--network-alias", alias]
        if user is not None:
            cmd += ["--user", f"{user}:{group if group is not None else user}"]
        if sc.get("readOnlyRootFilesystem"):
            cmd.append("--read-only")
        for cap in sc.get("capabilities", {}).get("drop", []):
            cmd += ["--cap-drop", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            cmd += ["--security-opt", "no-new-privileges"]
        limit = c.get("resources", {}).get("limits", {}).get("memory")
        if limit:
            cmd += ["--memory", limit.replace("Gi", "g").replace("Mi", "m")]
        for env in c.get("env", []):
            if "value" not in env:
                raise RuntimeError(f"{self.name}: env {env['name']} has no plain value; the harness maps only values")
            cmd += ["--env", f"{env['name']}={env['value']}"]
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        for volume in spec.get("volumes", []):
            mount = mounts.get(volume["name"])
            if mount is None:
                continue
            host = self.materialize(volume, objects, user, group)
            options = "ro" if mount.get("readOnly") else "rw"
            cmd += ["--volume", f"{host}:{mount['mountPath']}:{options},z"]
        cmd += [image, *c.get("command", []), *c.get("args", [])]
        podman(*cmd)

    def materialize(self, volume, objects, user, group):
        """A host directory with what Kubernetes would mount for this volume."""
        path = self.work / volume["name"]
        if "hostPath" in volume:
            return volume["hostPath"]["path"]
        path.mkdir(parents=True)
        if "secret" in volume:
            data = objects[("Secret", volume["secret"]["secretName"])]["data"]
            for item in volume["secret"].get("items", [{"key": k, "path": k} for k in data]):
                (path / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        elif "configMap" in volume:
            data = objects[("ConfigMap", volume["configMap"]["name"])]["data"]
            for key, value in data.items():
                (path / key).write_text(value)
        elif "emptyDir" not in volume:
            raise RuntimeError(f"{self.name}: volume {volume['name']} is of a kind the harness does not map")
        for p in [path, *path.iterdir()]:
            os.chown(p, user or 0, group or 0)
        mode = volume.get("secret", {}).get("defaultMode")
        for p in path.iterdir():
            os.chmod(p, mode if mode is not None else 0o644)
        self.volume_dirs[volume["name"]] = path
        return path

    def start(self):
        podman("start", self.name)

    def address(self):
        out = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", self.name).stdout
        return json.loads(out)[NETWORK]["IPAddress"]

    def port(self, name):
        """The container port named `name`."""
        return next(p["containerPort"] for p in self.container["ports"] if p["name"] == name)

    def probe(self, kind):
        """The rendered httpGet probe, against the container's address: the HTTP status."""
        probe = self.container[kind]["httpGet"]
        port = self.port(probe["port"]) if isinstance(probe["port"], str) else probe["port"]
        url = f"http://{self.address()}:{port}{probe['path']}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except Exception as e:  # noqa: BLE001 - any failure is a failed probe
            return str(e)

    def metric(self, name):
        """A gauge's value from the container's /metrics (the metrics port), or None."""
        with urllib.request.urlopen(f"http://{self.address()}:{self.port('metrics')}/metrics", timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return int(float(line.rsplit(" ", 1)[1]))
        return None

    def wait_probe(self, kind, within=30):
        deadline = time.time() + within
        status = None
        while time.time() < deadline:
            status = self.probe(kind)
            if status == 200:
                return 200
            time.sleep(0.3)
        return status

    def wait(self, within):
        result = subprocess.run(["podman", "wait", self.name], text=True, capture_output=True, timeout=within)
        return int(result.stdout.strip())

    def stop(self, grace):
        """As the kubelet stops a pod: SIGTERM, SIGKILL after the grace period."""
        started = time.time()
        podman("stop", "--time", str(grace), self.name)
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())
        return code, time.time() - started

    def logs(self):
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr


def render(helm, values, work):
    """helm template of the chart with the test values; the objects by (kind, name)."""
    work.mkdir(parents=True, exist_ok=True)
    values_file = work / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = run([helm, "template", RELEASE, str(CHART), "-f", str(values_file)]).stdout
    objects = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def one(objects, kind):
    found = [o for (k, _), o in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def read_report(out_dir):
    """The report and its one run."""
    report = json.loads((out_dir / "report.json").read_text())
    return report, report["runs"][0]


def follow_logs(name, on_line):
    """Calls on_line for each line the container prints (until it returns True or the container ends)."""
    proc = subprocess.Popen(["podman", "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def pump():
        for line in proc.stdout:
            if on_line(line):
                break
        proc.kill()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def scenario(args, work, values, name, elastic, secrets=()):
    objects = render(args.helm, values, work / name)
    for secret in secrets:  # what an existingSecret names, made outside the chart
        objects[("Secret", secret["metadata"]["name"])] = secret
    job, deployment = one(objects, "Job"), one(objects, "Deployment")
    services = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o["metadata"]["name"]
                for (kind, _), o in objects.items() if kind == "Service"}
    executor_spec = deployment["spec"]["template"]["spec"]
    grace = executor_spec["terminationGracePeriodSeconds"]
    replicas = deployment["spec"]["replicas"]
    executors = []

    def add_executor():
        pod = Pod(f"{deployment['metadata']['name']}-{name}-{len(executors)}", executor_spec, objects, work / name, args.image,
                  aliases=[services["executor"]])
        pod.start()
        executors.append(pod)
        return pod

    # The driver first: a name that does not exist yet makes the container DNS ask the host's
    # (unreachable) resolvers, and executors would wait out their timeouts. (Executors started
    # before the driver are tested in driver/tests/elastic.rs.)
    driver = Pod(f"{job['metadata']['name']}-{name}", job["spec"]["template"]["spec"], objects, work / name, args.image,
                 aliases=[services["driver"]])
    out_dir = driver.volume_dirs["out"]
    driver.start()
    for _ in range(1 if elastic else replicas):
        add_executor()

    added = []
    # What the autoscaler saw and did: the wanted count, the stopped executor's exit and time.
    autoscaled = {}
    if elastic:
        def on_line(line):
            if "tree level done" in line and "depth=0" in line:
                # As the HPA or KEDA would: read the driver's wanted count from its metrics port
                # and add that many executors, then take the first one away (a scale-down).
                autoscaled["wanted"] = driver.metric("canopy_driver_executors_wanted")
                while len(executors) < (autoscaled["wanted"] or 0):
                    added.append(add_executor())
                autoscaled["code"], autoscaled["seconds"] = executors[0].stop(grace)
                return True
            return False
        follower = follow_logs(driver.name, on_line)
    else:
        for pod in executors:
            check(pod.wait_probe("readinessProbe") == 200, f"{name}: {pod.name} answers its readinessProbe (/readyz on the metrics port)")
            check(pod.wait_probe("livenessProbe") == 200, f"{name}: {pod.name} answers its livenessProbe (/healthz)")
        # `helm test`: the chart's test Pod, probing the executors through their Service's name.
        test = one(objects, "Pod")
        test_pod = Pod(f"{test['metadata']['name']}-{name}", test["spec"], objects, work / name, args.image)
        test_pod.start()
        check(test_pod.wait(within=60) == 0, f"{name}: the chart's helm-test Pod passes (canopy-driver probe of the executor Service)",
              test_pod.logs()[-2000:])
    code = driver.wait(within=600)
    if elastic:
        follower.join(timeout=2 * grace)
    log = driver.logs()
    if not check(code == 0, f"{name}: the driver Job's container exits 0", log[-3000:]):
        for pod in executors:
            print(f"--- {pod.name}\n{pod.logs()[-2000:]}")
        return
    report, run_report = read_report(out_dir)
    sha = run_report["model_sha256"]
    check(sha == args.reference_sha, f"{name}: model SHA-256 {sha[:16]}… equals the in-process model's", f"in-process {args.reference_sha}")
    check(run_report["failures"] == [], f"{name}: no executor failed", json.dumps(run_report["failures"]))
    if values["data"].get("readBy") == "executors":
        shipped = run_report["traffic"]["partition_bytes_sent"] + run_report["bytes_moved"]
        check(shipped == 0, f"{name}: the executors read every partition from the data volume, none was shipped", f"{shipped} bytes")
    if elastic:
        changes = [(m["change"], m["executor_id"]) for m in run_report["membership"]]
        maximum = values["job"]["maxExecutors"]
        check(autoscaled.get("wanted") == maximum,
              f"{name}: the driver's canopy_driver_executors_wanted was {maximum} (job.maxExecutors) mid-job", autoscaled.get("wanted"))
        check(len(added) == maximum - 1 and sum(1 for c, _ in changes if c == "join") == maximum - 1,
              f"{name}: {maximum - 1} executor containers added to follow it joined mid-job", json.dumps(changes))
        check(any(c == "leave" for c, _ in changes), f"{name}: the stopped executor left (a decommission, not a loss)", json.dumps(changes))
        # Exit 0 without using up the grace period: it handed its partitions back and left.
        seconds = autoscaled.get("seconds", grace)
        check(autoscaled.get("code") == 0 and seconds < grace / 2,
              f"{name}: the stopped executor container exited 0 in {seconds:.1f} s (grace period {grace} s)",
              f"exit code {autoscaled.get('code')}\n{executors[0].logs()[-2000:]}")
    else:
        held = sum(s["rows_held"] for s in run_report["executor_stats"])
        check(len(run_report["executor_stats"]) == replicas, f"{name}: all {replicas} replicas registered and trained",
              json.dumps(run_report["executor_stats"]))
        check(held == report["rows"]["read"], f"{name}: every row held exactly once", f"{held} of {report['rows']['read']}")


def tls_secret(name, server_name):
    """A kubernetes.io/tls Secret as cert-manager makes one: a CA and one ECDSA certificate for
    every pod, for server and client use, naming only `server_name` (pods are dialled by address)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "canopy test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    data = {"tls.crt": pem(cert), "tls.key": key_pem, "ca.crt": pem(ca)}
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--helm", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--bin-dir", required=True, type=Path)
    args = parser.parse_args()
    repository, tag = args.image.rsplit(":", 1)

    work = Path(tempfile.mkdtemp(prefix="canopy-containers-"))
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    podman("network", "create", NETWORK)
    try:
        data = work / "data"
        data.mkdir()
        driver_bin = str(args.bin_dir / "canopy-driver")
        run([driver_bin, "gen-data", "--rows", str(DATA_ROWS), "--seed", "7", "--out", str(data / "flights.parquet")])
        os.chmod(data, 0o755)
        os.chmod(data / "flights.parquet", 0o644)
        experiment = ROOT / "experiments" / "flights.toml"
        run([driver_bin, "train", "--in-process", "--quiet", "--experiment", str(experiment), "--data", str(data / "flights.parquet"),
             *TREE_ARGS, "--out", str(work / "reference")])
        args.reference_sha = json.loads((work / "reference" / "report.json").read_text())["runs"][0]["model_sha256"]

        values = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "job": {"command": "train", "minExecutors": 1, "maxExecutors": 3, "extraArgs": TREE_ARGS,
                    "registrationTimeoutSeconds": 120, "lingerSeconds": 0},
            "data": {"source": "hostPath", "hostPath": str(data), "file": "flights.parquet"},
            "executor": {"replicas": 2, "graceSeconds": 20, "extraArgs": SLOW_EXECUTOR_ARGS},
        }
        scenario(args, work, values, "fixed", elastic=False)
        scenario(args, work, values, "elastic", elastic=True)
        # Executors that read their own rows from the data volume, joining and leaving mid-job.
        reading = {**values, "data": {**values["data"], "readBy": "executors"}}
        scenario(args, work, reading, "read-by-executors", elastic=True)
        # Mutual TLS and the token, with one certificate shared by every pod (tls.existingSecret).
        tls_values = {**values, "tls": {"enabled": True, "existingSecret": "canopy-tls", "serverName": "canopy.internal"}}
        scenario(args, work, tls_values, "tls", elastic=False, secrets=[tls_secret("canopy-tls", "canopy.internal")])
    finally:
        names = podman("ps", "-a", "--filter", f"network={NETWORK}", "--format", "{{.Names}}", check=False).stdout.split()
        if names:
            podman("rm", "-f", "-t", "0", *names, check=False)
        podman("network", "rm", "-f", NETWORK, check=False)
        # netavark turns IP forwarding on; give the host back as it was.
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        shutil.rmtree(work, ignore_errors=True)
    return summary("containers")


if __name__ == "__main__":
    sys.exit(main())
