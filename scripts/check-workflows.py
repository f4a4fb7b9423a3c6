"""Policy checks of .github/workflows beyond their schema (run by scripts/check-deploy with
.venv's Python, which has PyYAML). What they guard:

* no step gets the whole `secrets` context; a step's secret env vars are ones it uses
  (named in its script, or a DECK_* consumer key on a step that runs `deck gateway`), and
  every `deck gateway` step has every DECK_* key kong/consumers.yaml references;
* a `| tee` never hides the exit code of what it logs (pipefail);
* drift detection reads decK's exit code (`--non-zero-exit-code`), not its text;
* the Rust CI runs clippy with -D warnings and scripts/test; the image workflow builds
  amd64 and arm64 and pushes only on tags.
"""

import re
import sys
from pathlib import Path

import yaml

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def steps(workflow):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def main():
    consumer_keys = set(re.findall(r"DECK_[A-Z0-9_]+", Path("kong/consumers.yaml").read_text()))
    workflows = {p.name: (p.read_text(), yaml.safe_load(p.read_text())) for p in sorted(Path(".github/workflows").glob("*.yml"))}
    for name, (text, wf) in workflows.items():
        check("toJSON(secrets)" not in text.replace(" ", ""), f"{name}: passes the whole secrets context to a step")
        default_bash = (wf.get("defaults") or {}).get("run", {}).get("shell") == "bash"
        for job, step in steps(wf):
            where = f"{name} job {job} step {step.get('name') or step.get('uses')!r}"
            script = step.get("run", "")
            env = step.get("env") or {}
            if not isinstance(env, dict):  # e.g. ${{ fromJSON(toJSON(secrets)) }}
                check(False, f"{where}: env must name each variable, not be an expression ({env})")
                env = {}
            for var, value in env.items():
                if "secrets." in str(value):
                    used = var in script or (var in consumer_keys and "deck gateway" in script)
                    check(used, f"{where}: gets secret {var} it does not use")
            if "deck gateway" in script:
                check(consumer_keys <= set(env), f"{where}: runs deck gateway without {sorted(consumer_keys - set(env))}")
            if re.search(r"\|\s*tee\b", script):
                pipefail = default_bash or step.get("shell") == "bash" or "set -o pipefail" in script
                check(pipefail, f"{where}: `| tee` without pipefail hides the exit code")
            if job == "drift" and "deck gateway diff" in script:
                check("--non-zero-exit-code" in script, f"{where}: drift must use deck gateway diff --non-zero-exit-code")

    rust = workflows.get("rust.yml", ("", {"jobs": {}}))[1]
    runs = " ".join(s.get("run", "") for _, s in steps(rust))
    check("cargo clippy --workspace --all-targets" in runs and "-D warnings" in runs, "rust.yml: clippy -D warnings missing")
    check("scripts/test" in runs, "rust.yml: scripts/test missing")
    image = workflows.get("image.yml", ("", {"jobs": {}}))[1]
    builds = [s.get("with", {}) for _, s in steps(image) if str(s.get("uses", "")).startswith("docker/build-push-action")]
    check(builds and "linux/arm64" in builds[0].get("platforms", "") and "linux/amd64" in builds[0].get("platforms", ""),
          "image.yml: must build linux/amd64 and linux/arm64")
    check(builds and "refs/tags/v" in str(builds[0].get("push", "")), "image.yml: must push only on v* tags")

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
