// Validates the prometheus-operator objects (PodMonitor, ServiceMonitor, PrometheusRule) of
// the YAML files given on the command line against the CRD schemas shipped in npm
// @kubernetes-models/prometheus-operator (offline). Unknown kinds are an error, so a new
// CRD cannot slip through unchecked. Usage: node validate-crds.mjs FILE...
import { readFileSync } from "node:fs";
import { PodMonitor, PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PodMonitor, PrometheusRule, ServiceMonitor };
let failed = 0;
for (const file of process.argv.slice(2)) {
  // The files are JSON here: scripts/check-deploy converts YAML first (no YAML parser in node).
  const doc = JSON.parse(readFileSync(file, "utf8"));
  const Kind = doc.apiVersion === "monitoring.coreos.com/v1" ? kinds[doc.kind] : undefined;
  if (!Kind) {
    console.error(`${file}: no schema for ${doc.apiVersion} ${doc.kind}`);
    failed++;
    continue;
  }
  try {
    new Kind(doc).validate();
    console.log(`${file}: ${doc.kind} ${doc.metadata.name} valid`);
  } catch (e) {
    console.error(`${file}: ${doc.kind} ${doc.metadata?.name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
