// Validates rendered custom resources against their projects' published CRD schemas, as packaged
// by @kubernetes-models (prometheus-operator, KEDA, cert-manager). Reads a JSON array of objects
// from the file given; prints one line per object; exits 1 when any is refused or unknown.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";

const models = {
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "cert-manager.io/v1/Certificate": Certificate,
};

let failed = 0;
for (const obj of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = models[key];
  if (!Model) {
    console.log(`FAILED: ${key} ${obj.metadata?.name}: no schema known for this kind`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok: ${key} ${obj.metadata.name} matches its CRD schema`);
  } catch (e) {
    console.log(`FAILED: ${key} ${obj.metadata?.name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
