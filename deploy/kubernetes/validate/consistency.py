"""Checks that deploy/kubernetes agrees with the rest of the repository (scripts/check-deploy).

Schema validators see each object alone; these checks catch what they cannot: the Helm
values drifting from kong/conf/kong-3.9.env, a readiness probe or PodMonitor pointing at a
port nothing listens on, the PrometheusRule drifting from the README's alerts. Also writes
each prometheus-operator object as JSON into OUT_DIR for validate-crds.mjs.

Usage: python consistency.py OUT_DIR   (run from the repository root, PyYAML required)
"""

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

K8S = Path("deploy/kubernetes")
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def kong_env_file():
    env = {}
    for line in Path("kong/conf/kong-3.9.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


def flag(argv, name):
    """The value of `--name VALUE` in an argv list, or None."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def main(out_dir):
    values = yaml.safe_load((K8S / "kong-values.yaml").read_text())
    env = {f"KONG_{k.upper()}": str(v) for k, v in values["env"].items() if not isinstance(v, dict)}

    # 1. The pluginserver layout and socket timeouts of kong/conf/kong-3.9.env, with the
    #    socket moved to the writable prefix; start_cmd may only add flags.
    socket = env.get("KONG_PLUGINSERVER_GHASI_JWT_SOCKET", "")
    for key, want in kong_env_file().items():
        have = env.get(key)
        want = want.replace("/usr/local/kong/ghasi.socket", socket)
        if key.endswith("_START_CMD"):
            check(have is not None and shlex.split(have)[: len(shlex.split(want))] == shlex.split(want),
                  f"kong-values.yaml env: {key} must start with {want!r}, is {have!r}")
        else:
            check(have == want, f"kong-values.yaml env: {key} must be {want!r} (kong/conf/kong-3.9.env), is {have!r}")
    check(socket.startswith("/kong_prefix/"),
          f"the socket {socket!r} must be in the chart's writable /kong_prefix (read-only root filesystem)")
    check(env.get("KONG_DATABASE") == "off", "DB-less: env.database must be \"off\"")
    check(values.get("dblessConfig", {}).get("secret"), "dblessConfig.secret must name the rendered decK state")
    start = shlex.split(env.get("KONG_PLUGINSERVER_GHASI_JWT_START_CMD", ""))
    listen = flag(start, "--metrics-listen") or ""
    check(listen.startswith("0.0.0.0:"), f"start_cmd must --metrics-listen on the pod IP (0.0.0.0:PORT), has {listen!r}")
    metrics_port = int(listen.rsplit(":", 1)[-1]) if listen else None
    token = values.get("customEnv", {}).get("ghasi_edge_service_token", {})
    check("secretKeyRef" in token.get("valueFrom", {}),
          "customEnv.ghasi_edge_service_token must come from a Secret (GHASI_EDGE_SERVICE_TOKEN)")

    # 2. Readiness covers Kong's /status/ready and our /ready, on the ports that listen.
    status_port = values["status"]["http"]["containerPort"]
    probe = values["readinessProbe"].get("exec", {}).get("command", [])
    urls = (flag(probe, "--probe") or "").split(",")
    check(probe[:1] == ["/usr/local/bin/ghasi-plugin-server"], f"readinessProbe must exec our binary, is {probe}")
    for want in (f"http://127.0.0.1:{status_port}/status/ready", f"http://127.0.0.1:{metrics_port}/ready"):
        check(want in urls, f"readinessProbe --probe must include {want}, has {urls}")

    # 3. The PodMonitor scrapes that port on pods the chart labels.
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    ports = [e.get("portNumber") for e in monitor["spec"]["podMetricsEndpoints"]]
    check(ports == [metrics_port], f"podmonitor.yaml scrapes {ports}, the server listens on {metrics_port}")
    labels = values.get("podLabels", {})
    for k, v in monitor["spec"]["selector"]["matchLabels"].items():
        check(labels.get(k) == v, f"podmonitor.yaml selects {k}={v}, which kong-values.yaml podLabels lacks")

    # 4. The PrometheusRule carries exactly the README's alerts.
    readme = Path("README.md").read_text()
    block = readme.split("### What to alert on\n\n```yaml\n", 1)[1].split("```", 1)[0]
    documented = [(r["alert"], r["expr"], r.get("for")) for r in yaml.safe_load(block)["groups"][0]["rules"]]
    rule = yaml.safe_load((K8S / "prometheusrule.yaml").read_text())
    shipped = [(r["alert"], r["expr"], r.get("for")) for g in rule["spec"]["groups"] for r in g["rules"]]
    check(shipped == documented, "prometheusrule.yaml differs from README \"What to alert on\":\n"
          + "\n".join(f"  README {d}\n  rule   {s}" for d, s in zip(documented, shipped) if d != s)
          + ("" if len(shipped) == len(documented) else f"\n  {len(documented)} documented, {len(shipped)} shipped"))
    check(all(re.fullmatch(r"Ghasi\w+", a) for a, _, _ in shipped), "alert names must be GhasiCamelCase")

    # 5. The CRD objects, as JSON, for validate-crds.mjs.
    out = Path(out_dir)
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                (out / f"{path.stem}-{i}.json").write_text(json.dumps(doc))

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
