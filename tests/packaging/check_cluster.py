#!/usr/bin/env python3
"""Checks the hub's container build file and Kubernetes manifests.

No container engine and no cluster are available to the tests, so this reads
and cross-checks what can be checked without them:

  * every manifest parses as YAML; the kinds the deployment needs are there;
  * every name the pod refers to (PVC, Secrets, ConfigMap, volumes, ports,
    labels, image) is defined, by a manifest or a kustomize generator;
  * readiness and liveness probes of the hub are HTTPS GETs of /healthz;
  * the Containerfile builds FROM Debian 12, installs the outpost-hub .deb,
    runs as the numeric user the pod runs as, and exposes the pod's ports;
  * with the outpost-hub binary of the build (argument 2), the real thing:
    `outpost-hub init` writes a data directory, the generators take their
    files from it, the init container's script (run here with its volume
    paths mapped to temporary directories) lays out the pod's data directory
    from those Secrets and that ConfigMap, and `outpost-hub serve` plus
    `mosquitto -c` start on it and answer /healthz and the MQTT port.

Usage: check_cluster.py <repo>/packaging [<build>/bin]
Exit status 0 when everything holds; every failure is printed.
"""
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

try:
    import yaml
except ImportError:  # a failure, not a skip: install-deps.sh tools brings it
    print("FAIL: python3-yaml is missing (packaging/install-deps.sh tools)")
    sys.exit(1)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def check_manifests(pkg):
    k8s = os.path.join(pkg, "k8s")
    kust_path = os.path.join(k8s, "kustomization.yaml")
    if not check(os.path.isfile(kust_path), "packaging/k8s/kustomization.yaml is missing"):
        return None
    kust = load_all(kust_path)[0]
    check(kust.get("kind") == "Kustomization", "kustomization.yaml: kind is not Kustomization")

    docs = []
    for res in kust.get("resources", []):
        path = os.path.join(k8s, res)
        if check(os.path.isfile(path), f"kustomization resource {res} does not exist"):
            docs += load_all(path)
    by_kind = {}
    for d in docs:
        check(isinstance(d, dict) and "apiVersion" in d and "kind" in d,
              f"a manifest without apiVersion/kind: {d!r:.80}")
        check("name" in d.get("metadata", {}), f"{d.get('kind')} without metadata.name")
        by_kind.setdefault(d.get("kind"), {})[d.get("metadata", {}).get("name")] = d

    for kind in ("Namespace", "PersistentVolumeClaim", "Deployment", "Service"):
        check(kind in by_kind, f"no {kind} among the manifests")
    secrets = {g["name"]: g for g in kust.get("secretGenerator", [])}
    secrets.update(by_kind.get("Secret", {}))
    configmaps = {g["name"]: g for g in kust.get("configMapGenerator", [])}
    configmaps.update(by_kind.get("ConfigMap", {}))
    pvcs = by_kind.get("PersistentVolumeClaim", {})
    check(any("ca.key" in " ".join(g.get("files", [])) for g in secrets.values()),
          "no Secret carries the hub CA (ca.key)")
    check(any("admin.token" in " ".join(g.get("files", [])) for g in secrets.values()),
          "no Secret carries the admin token")

    dep = by_kind.get("Deployment", {}).get("outpost-hub")
    if not check(dep is not None, "no Deployment named outpost-hub"):
        return None
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    tmpl_labels = spec["template"]["metadata"].get("labels", {})
    check(spec.get("replicas") == 1, "hub Deployment: replicas must be 1 (one hub.db writer)")
    check(spec.get("strategy", {}).get("type") == "Recreate",
          "hub Deployment: strategy must be Recreate (RWO volume, one SQLite writer)")
    check(all(tmpl_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
          "hub Deployment: selector does not match the pod template's labels")
    check(pod.get("shareProcessNamespace") is True,
          "hub pod: shareProcessNamespace must be true (the hub SIGHUPs mosquitto on revocation)")

    # Volumes resolve; every mount names a volume.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            check(claim in pvcs, f"volume {v['name']}: PVC {claim} is not defined")
        if "secret" in v:
            name = v["secret"]["secretName"]
            check(name in secrets, f"volume {v['name']}: Secret {name} is not defined")
        if "configMap" in v:
            name = v["configMap"]["name"]
            check(name in configmaps, f"volume {v['name']}: ConfigMap {name} is not defined")
    containers = {c["name"]: c for c in pod.get("containers", [])}
    inits = {c["name"]: c for c in pod.get("initContainers", [])}
    for c in list(containers.values()) + list(inits.values()):
        for m in c.get("volumeMounts", []):
            check(m["name"] in volumes, f"container {c['name']}: mount {m['name']} has no volume")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                check(ref["name"] in secrets, f"env {e['name']}: Secret {ref['name']} undefined")
        image_names = {i["name"] for i in kust.get("images", [])}
        check(c.get("image") in image_names,
              f"container {c['name']}: image {c.get('image')} is not set by kustomization images")
    claims = [v for v in volumes.values() if "persistentVolumeClaim" in v]
    check(len(claims) == 1, "hub pod: exactly one PVC (the data directory) expected")
    data_vol = claims[0]["name"] if claims else None

    hub = containers.get("hub")
    broker = containers.get("mosquitto")
    check(hub is not None, "hub pod: no container named hub")
    check(broker is not None, "hub pod: no container named mosquitto")
    ports = {}
    for c in containers.values():
        for p in c.get("ports", []):
            ports[p.get("name")] = p["containerPort"]
            ports[p["containerPort"]] = p["containerPort"]

    def data_mounted(c):
        return any(m["name"] == data_vol and m["mountPath"] == "/var/lib/outpost-hub"
                   for m in c.get("volumeMounts", []))

    if hub:
        check(data_mounted(hub), "hub container: the PVC is not at /var/lib/outpost-hub")
        check(hub.get("args", [])[:1] == ["serve"], "hub container: does not run `serve`")
        for probe in ("readinessProbe", "livenessProbe"):
            get = hub.get(probe, {}).get("httpGet")
            if check(get is not None, f"hub container: no {probe} with httpGet"):
                check(get.get("path") == "/healthz", f"hub {probe}: path is not /healthz")
                check(get.get("scheme") == "HTTPS", f"hub {probe}: the API is HTTPS only")
                check(get.get("port") in ports, f"hub {probe}: port {get.get('port')} unknown")
    if broker:
        check(data_mounted(broker), "mosquitto container: the PVC is not at /var/lib/outpost-hub")
        check(broker.get("command") ==
              ["/usr/sbin/mosquitto", "-c", "/var/lib/outpost-hub/mosquitto.conf"],
              "mosquitto container: must run the generated /var/lib/outpost-hub/mosquitto.conf")
        for probe in ("readinessProbe", "livenessProbe"):
            check(probe in broker, f"mosquitto container: no {probe}")

    svc = by_kind.get("Service", {}).get("outpost-hub")
    if check(svc is not None, "no Service named outpost-hub"):
        sel = svc["spec"].get("selector", {})
        check(sel and all(tmpl_labels.get(k) == v for k, v in sel.items()),
              "Service selector does not match the hub pod's labels")
        svc_ports = {p["port"]: p for p in svc["spec"].get("ports", [])}
        for want in (8443, 8883):
            check(want in svc_ports, f"Service does not expose {want}")
        for p in svc_ports.values():
            target = p.get("targetPort", p["port"])
            check(target in ports, f"Service port {p['port']}: targetPort {target} is no container port")
            check(ports.get(target) == p["port"],
                  f"Service port {p['port']} maps to container port {ports.get(target)}: devices "
                  "are told the port init was given, keep them equal")
    return {"kust": kust, "pod": pod, "ports": ports, "k8s": k8s, "secrets": secrets,
            "configmaps": configmaps, "volumes": volumes, "inits": inits}


def check_containerfile(pkg, m):
    path = os.path.join(pkg, "container", "Containerfile")
    if not check(os.path.isfile(path), "packaging/container/Containerfile is missing"):
        return
    text = open(path, encoding="utf-8").read()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines()
             if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    check(len(froms) == 1 and re.search(r"debian:(12|bookworm)", froms[0]),
          "Containerfile: must build FROM debian:12 (bookworm)")
    check(re.search(r"apt-get install .*outpost-hub_\$\{OUTPOST_VERSION\}_amd64\.deb", text),
          "Containerfile: does not apt-get install the outpost-hub .deb")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    user = [l.split(None, 1)[1] for l in lines if l.upper().startswith("USER ")]
    uid = None
    if check(len(user) == 1, "Containerfile: one USER line expected"):
        uid = re.sub(r"\$\{(\w+)\}", lambda mm: args.get(mm.group(1), "?"), user[-1]).split(":")[0]
        check(uid.isdigit() and uid != "0", f"Containerfile: USER {user[-1]} is not a numeric non-root id")
    exposed = set()
    for l in lines:
        if l.upper().startswith("EXPOSE "):
            exposed |= {int(p.split("/")[0]) for p in l.split()[1:]}
    check(any(l.startswith("ENTRYPOINT") and "/usr/bin/outpost-hub" in l for l in lines),
          "Containerfile: ENTRYPOINT is not /usr/bin/outpost-hub")
    if m:
        pod_ports = {v for k, v in m["ports"].items() if isinstance(k, str)}
        check(exposed == pod_ports, f"Containerfile EXPOSE {sorted(exposed)} != pod ports {sorted(pod_ports)}")
        run_as = m["pod"].get("securityContext", {}).get("runAsUser")
        check(uid is not None and str(run_as) == uid,
              f"pod runAsUser {run_as} differs from the image's USER {uid}")
        check(m["pod"].get("securityContext", {}).get("runAsNonRoot") is True,
              "hub pod: runAsNonRoot must be true")


def check_with_hub(m, bin_dir):
    """Runs init, the init container's script, serve and mosquitto for real."""
    hub_bin = os.path.join(bin_dir, "outpost-hub")
    if not check(os.access(hub_bin, os.X_OK), f"{hub_bin} is missing: build the hub first"):
        return
    if not check(shutil.which("mosquitto") is not None, "mosquitto is not installed"):
        return
    tmp = tempfile.mkdtemp(prefix="outpost-cluster-")
    procs = []
    try:
        os.chmod(tmp, 0o755)
        data = os.path.join(tmp, "var-lib-outpost-hub")
        api_port, mqtt_port = free_port(), free_port()
        r = subprocess.run([hub_bin, "init", "--data-dir", data, "--hostname", "hub.example.com",
                            "--api-port", str(api_port), "--broker-port", str(mqtt_port)],
                           capture_output=True, text=True, timeout=120)
        if not check(r.returncode == 0, f"outpost-hub init failed: {r.stdout}{r.stderr}"):
            return
        generated = set(os.listdir(data))
        # kustomization.yaml names the files relative to itself: hub-init/<file>.
        referenced = {}
        for kind, gens in (("secret", m["kust"].get("secretGenerator", [])),
                           ("configmap", m["kust"].get("configMapGenerator", []))):
            for g in gens:
                for f in g.get("files", []):
                    key, _, src = f.partition("=")
                    src = src or key
                    check(src.startswith("hub-init/"), f"generator file {f} is not under hub-init/")
                    name = os.path.basename(src)
                    check(name in generated, f"generator file {name} is not written by outpost-hub init")
                    referenced[(kind, g["name"], os.path.basename(key))] = os.path.join(data, name)
        used = {os.path.basename(p) for p in referenced.values()}
        for f in generated - used:
            # ctl.yaml is the operator's (outpostctl), hub.db is the hub's own.
            check(f in ("ctl.yaml", "hub.db"), f"init writes {f}, but no Secret/ConfigMap carries it")

        # Volumes as the kubelet would mount them, then the init container's
        # script with every mount path mapped into `tmp`.
        mounts = {}
        for c in m["inits"].values():
            for vm in c.get("volumeMounts", []):
                v = m["volumes"][vm["name"]]
                host = os.path.join(tmp, "mount-" + vm["name"])
                if "secret" in v or "configMap" in v:
                    kind = "secret" if "secret" in v else "configmap"
                    name = v["secret"]["secretName"] if kind == "secret" else v["configMap"]["name"]
                    os.makedirs(host, exist_ok=True)
                    for (k, g, key), src in referenced.items():
                        if k == kind and g == name:
                            shutil.copy(src, os.path.join(host, key))
                mounts[vm["mountPath"]] = host
        shutil.rmtree(data)  # the PVC starts empty, at the same path init used
        os.makedirs(data)
        mounts["/var/lib/outpost-hub"] = data
        for c in m["inits"].values():
            script = c["command"][-1]
            for path in sorted(mounts, key=len, reverse=True):
                script = script.replace(path, mounts[path])
            r = subprocess.run(["/bin/sh", "-ec", script], capture_output=True, text=True, timeout=60)
            check(r.returncode == 0, f"init container {c['name']} failed: {r.stdout}{r.stderr}")
        laid_out = set(os.listdir(data))
        for f in generated - {"ctl.yaml", "hub.db"}:
            check(f in laid_out, f"the init container does not lay out {f}")
        for f in laid_out:
            mode = os.stat(os.path.join(data, f)).st_mode & 0o777
            if f.endswith(".key") or f == "admin.token":
                check(mode == 0o600, f"{f} is laid out with mode {oct(mode)}, not 0600")

        # The two containers' commands on that directory.
        by_name = {c["name"]: c for c in m["pod"]["containers"]}
        hub_c, broker_c = by_name["hub"], by_name["mosquitto"]
        broker_cmd = [a.replace("/var/lib/outpost-hub", data) for a in broker_c["command"]]
        hub_cmd = [hub_bin] + [a.replace("/var/lib/outpost-hub", data) for a in hub_c["args"]]
        for name, cmd in (("mosquitto", broker_cmd), ("hub", hub_cmd)):
            log = open(os.path.join(tmp, name + ".log"), "w")
            procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True), log))

        def mqtt_up():
            try:
                socket.create_connection(("127.0.0.1", mqtt_port), timeout=1).close()
                return True
            except OSError:
                return False

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # as the kubelet's HTTPS probes

        def healthz():
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{api_port}/healthz",
                                            context=ctx, timeout=2) as resp:
                    return resp.status == 200
            except Exception:
                return False

        check(wait_for(mqtt_up, 30), "mosquitto did not open its port on the laid-out data dir")
        ok = check(wait_for(healthz, 60), "the hub did not answer /healthz on the laid-out data dir")
        if not ok:
            for name, _, log in procs:
                log.flush()
                print(f"--- {name}\n" + open(log.name).read()[-3000:])
    finally:
        for name, p, log in procs:
            try:
                os.killpg(p.pid, 15)
                p.wait(timeout=10)
            except Exception:
                p.kill()
            log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    pkg = sys.argv[1]
    m = check_manifests(pkg)
    check_containerfile(pkg, m)
    if m and len(sys.argv) == 3:
        check_with_hub(m, sys.argv[2])
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("cluster manifests and Containerfile: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
