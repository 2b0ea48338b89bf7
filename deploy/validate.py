"""Offline checks of the rendered deploy/ manifests; deploy/validate.sh renders them and runs
this in its venv (PyYAML and kubernetes-validate). Each check prints `ok` or `FAIL` with the
reason; the exit status is 1 when any failed.

    validate.py --strait BIN --kubernetes-version 1.33.0 \
        gateway=deploy.yaml httpbin=httpbin.yaml gateway-host-network=host-network.yaml

Renders named `gateway*` hold the gateway (namespace, RBAC, ConfigMap, DaemonSet, Service);
the one named `httpbin` holds the example backend. Checked:

1. every object against the Kubernetes OpenAPI schema of that version, strictly (unknown
   fields are errors; a kind the version does not have is an error too);
2. RBAC: one ClusterRole, granting `list` and `watch` on `endpointslices`
   (discovery.k8s.io), `endpoints` and `services` (core) and nothing else (no other verb,
   resource, group, wildcard, resourceNames, nonResourceURLs or aggregation); no Role, and
   every binding binds that ClusterRole to the DaemonSet's service account only;
3. the config in the ConfigMap the DaemonSet mounts passes `strait check` without warnings;
4. the DaemonSet agrees with that config and with the issue's requirements: the ports, the
   probes on the admin port, the grace period above shutdown.delay + shutdown.timeout,
   non-root on a read-only root filesystem, RollingUpdate with maxUnavailable 1; the
   Service selects its pods and targets their listener;
5. deploy/rbac-tls-secrets.yaml (render `tls-secrets`): one Role granting `get`, `list` and
   `watch` on `secrets` by `resourceNames` only, bound by one RoleBinding in its namespace
   to ServiceAccount strait/strait only;
6. deploy/rbac-node-zone.yaml (render `node-zone`): one ClusterRole granting `get` on
   `nodes` and nothing else, bound by one ClusterRoleBinding to ServiceAccount
   strait/strait only; and the DaemonSet passes `NODE_NAME` from `spec.nodeName`;
7. the example: 3 replicas with a readiness probe and a preStop sleep shorter than its grace
   period, behind the Service (and port) that the config's upstream discovers, in a namespace
   its registry watches.
"""

import argparse
import ipaddress
import os
import re
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

ALLOWED_RULES = {
    ("discovery.k8s.io", "endpointslices"),
    ("", "endpoints"),
    ("", "services"),
}
ALLOWED_VERBS = {"list", "watch"}
RULE_KEYS = {"apiGroups", "resources", "verbs"}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, why=""):
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {why}" if why else ""))
        return ok


def kn(obj):
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def duration_seconds(text):
    """The humantime durations of CONFIG.md that the config uses: `5s`, `250ms`, `1m 30s`."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    parts = str(text).split()
    if not parts:
        raise ValueError(f"empty duration {text!r}")
    for part in parts:
        m = re.fullmatch(r"(\d+)([a-z]+)", part)
        if not m or m.group(2) not in units:
            raise ValueError(f"cannot read duration {text!r}")
        total += int(m.group(1)) * units[m.group(2)]
    return total


def socket_addr(text):
    """`ip:port` or `[ip]:port` → (ipaddress, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]+):(\d+)", str(text))
    if not m:
        raise ValueError(f"not an ip:port: {text!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return ipaddress.ip_address(host), int(port)


def container_port(container, ref):
    """A probe's or Service's port (number or name) → the container port number, or None."""
    for p in container.get("ports") or []:
        if ref in (p.get("name"), p.get("containerPort")):
            return p.get("containerPort")
    return None


def one(objs, kind, checks, where):
    found = [o for o in objs if o.get("kind") == kind]
    checks.check(len(found) == 1, f"{where}: exactly one {kind}", f"found {len(found)}")
    return found[0] if len(found) == 1 else None


# === 1. schemas ===


def check_schemas(name, objs, version, checks):
    for obj in objs:
        what = f"{name}: {kn(obj)} matches the Kubernetes {version} schema (strict)"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            checks.check(True, what)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            checks.check(False, what, f"{path}: {e.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as e:
            checks.check(False, what, e.message)


# === 2. RBAC ===


def check_rbac(name, objs, daemonset, checks):
    for obj in objs:
        if obj.get("kind") in ("Role", "RoleBinding"):
            checks.check(
                False, f"{name}: no {obj['kind']}", f"{kn(obj)} grants beyond the ClusterRole"
            )
    role = one(objs, "ClusterRole", checks, name)
    if role is None:
        return
    problems = []
    if "aggregationRule" in role:
        problems.append("has an aggregationRule")
    granted = set()
    for i, rule in enumerate(role.get("rules") or []):
        extra = set(rule) - RULE_KEYS
        if extra:
            problems.append(
                f"rules[{i}] has {sorted(extra)} (only apiGroups/resources/verbs allowed)"
            )
        verbs = set(rule.get("verbs") or [])
        if not verbs <= ALLOWED_VERBS:
            problems.append(f"rules[{i}] verbs {sorted(verbs - ALLOWED_VERBS)} beyond list/watch")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                if (group, resource) not in ALLOWED_RULES:
                    problems.append(f"rules[{i}] grants {resource!r} in group {group!r}")
                for verb in verbs:
                    granted.add((group, resource, verb))
    wanted = {(g, r, v) for g, r in ALLOWED_RULES for v in ALLOWED_VERBS}
    missing = wanted - granted
    if missing:
        problems.append(f"missing {sorted(missing)} (strait's watcher needs them)")
    checks.check(
        not problems,
        f"{name}: {kn(role)} grants only list/watch on endpointslices, endpoints, services",
        "; ".join(problems),
    )

    if daemonset is None:
        return
    pod = daemonset["spec"]["template"]["spec"]
    account = (pod.get("serviceAccountName"), daemonset["metadata"].get("namespace"))
    accounts = {
        (o["metadata"]["name"], o["metadata"].get("namespace"))
        for o in objs
        if o.get("kind") == "ServiceAccount"
    }
    checks.check(
        account in accounts,
        f"{name}: the DaemonSet runs as a ServiceAccount defined here",
        f"{account}",
    )
    bindings = [o for o in objs if o.get("kind") == "ClusterRoleBinding"]
    checks.check(bool(bindings), f"{name}: a ClusterRoleBinding exists")
    for b in bindings:
        ref = b.get("roleRef") or {}
        subjects = [
            (s.get("kind"), s.get("name"), s.get("namespace")) for s in b.get("subjects") or []
        ]
        checks.check(
            ref.get("kind") == "ClusterRole"
            and ref.get("name") == role["metadata"]["name"]
            and subjects == [("ServiceAccount", *account)],
            f"{name}: {kn(b)} binds {role['metadata']['name']}"
            f" to ServiceAccount {account[1]}/{account[0]} only",
            f"roleRef {ref}, subjects {subjects}",
        )


# === 3 and 4. the config and the DaemonSet ===


def mounted_config(name, objs, daemonset, checks):
    """The config file the DaemonSet's container reads: (container, path, text) or None."""
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = list(container.get("command") or []) + list(container.get("args") or [])
    path = None
    if "run" in args and "--config" in args[:-1]:
        path = args[args.index("--config") + 1]
    if not checks.check(
        path is not None, f"{name}: the container runs `strait run --config FILE`", f"args {args}"
    ):
        return None
    mount = next(
        (
            m
            for m in container.get("volumeMounts") or []
            if path.startswith(m["mountPath"].rstrip("/") + "/")
        ),
        None,
    )
    volume = mount and next(
        (v for v in pod.get("volumes") or [] if v["name"] == mount["name"]), None
    )
    cm_name = volume and (volume.get("configMap") or {}).get("name")
    ok = checks.check(
        bool(cm_name) and mount.get("readOnly") is True and "subPath" not in mount,
        f"{name}: {path} comes from a ConfigMap volume mounted read-only, without subPath",
        f"mount {mount}, volume {volume}",
    )
    if not ok:
        return None
    ns = daemonset["metadata"].get("namespace")
    cm = next(
        (
            o
            for o in objs
            if o.get("kind") == "ConfigMap"
            and o["metadata"]["name"] == cm_name
            and o["metadata"].get("namespace") == ns
        ),
        None,
    )
    key = os.path.relpath(path, mount["mountPath"])
    text = cm and (cm.get("data") or {}).get(key)
    if not checks.check(text is not None, f"{name}: ConfigMap {ns}/{cm_name} has the key {key}"):
        return None
    return container, path, text


def check_strait(name, strait, text, checks):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "strait.yaml")
        with open(path, "w") as f:
            f.write(text)
        run = subprocess.run([strait, "check", path], capture_output=True, text=True)
    out = (run.stdout + run.stderr).strip()
    checks.check(
        run.returncode == 0 and "warning" not in out,
        f"{name}: the ConfigMap's config passes `strait check` without warnings",
        f"exit {run.returncode}: {out}",
    )


def check_daemonset(name, daemonset, container, config, checks):
    spec = daemonset["spec"]
    pod = spec["template"]["spec"]
    host_network = pod.get("hostNetwork") is True

    env = {e.get("name"): e for e in container.get("env") or []}
    checks.check(
        ((env.get("NODE_NAME") or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        == "spec.nodeName",
        f"{name}: NODE_NAME comes from the downward API (spec.nodeName)",
        f"{env.get('NODE_NAME')}",
    )

    strategy = spec.get("updateStrategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    if host_network:
        # The new pod binds the same ports beside the old one (SO_REUSEPORT): a surge.
        checks.check(
            strategy.get("type") == "RollingUpdate"
            and rolling.get("maxSurge") == 1
            and rolling.get("maxUnavailable") == 0,
            f"{name}: RollingUpdate with maxSurge 1 and maxUnavailable 0",
            f"{strategy}",
        )
    else:
        checks.check(
            strategy.get("type") == "RollingUpdate" and rolling.get("maxUnavailable") == 1,
            f"{name}: RollingUpdate with maxUnavailable 1",
            f"{strategy}",
        )

    shutdown = config.get("shutdown") or {}
    try:
        stop = duration_seconds(shutdown.get("delay", "5s")) + duration_seconds(
            shutdown.get("timeout", "20s")
        )
        grace = pod.get("terminationGracePeriodSeconds", 30)
        checks.check(
            grace > stop,
            f"{name}: terminationGracePeriodSeconds ({grace})"
            f" > shutdown.delay + shutdown.timeout ({stop:g} s)",
        )
    except ValueError as e:
        checks.check(False, f"{name}: shutdown durations readable", str(e))

    # Listeners and the admin server on addresses the ports and probes reach.
    listen_ports = set()
    for listener in config.get("listeners") or []:
        try:
            listen_ports.add(socket_addr(listener["address"])[1])
        except (KeyError, ValueError) as e:
            checks.check(False, f"{name}: listener address readable", str(e))
    http = container_port(container, "http")
    checks.check(
        http in listen_ports,
        f"{name}: container port `http` ({http}) is a listener port",
        f"{sorted(listen_ports)}",
    )
    admin = config.get("admin") or {}
    try:
        ip, port = socket_addr(admin.get("listen", "127.0.0.1:9901"))
        checks.check(
            admin.get("enabled", True) is True and ip.is_unspecified,
            f"{name}: admin.listen ({ip}) is reachable by the kubelet (0.0.0.0 or [::])",
        )
        checks.check(
            container_port(container, "admin") == port,
            f"{name}: container port `admin` is admin.listen's port ({port})",
        )
    except ValueError as e:
        checks.check(False, f"{name}: admin.listen readable", str(e))
        port = None
    socket = admin.get("socket")
    mounts = [m.get("mountPath", "") for m in container.get("volumeMounts") or []]
    checks.check(
        socket is None or any(socket.startswith(m.rstrip("/") + "/") for m in mounts),
        f"{name}: admin.socket ({socket}) is on a mounted volume (the root is read-only)",
        f"{mounts}",
    )
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if host_network:
            # Pods overlapping on the node share the admin port: each asks its own socket.
            command = ((container.get(probe) or {}).get("exec") or {}).get("command") or []
            checks.check(
                socket is not None
                and command[1:] == ["probe", "--socket", socket, path]
                and command[:1] == ["/usr/local/bin/strait"],
                f"{name}: {probe} is `strait probe --socket {socket} {path}`",
                f"{command}",
            )
            continue
        get = (container.get(probe) or {}).get("httpGet") or {}
        checks.check(
            get.get("path") == path
            and port is not None
            and container_port(container, get.get("port")) == port,
            f"{name}: {probe} is GET {path} on the admin port",
            f"{get}",
        )

    ports = container.get("ports") or []
    if host_network:
        checks.check(
            all(p.get("hostPort") in (None, p["containerPort"]) for p in ports),
            f"{name}: on the host network every hostPort equals its containerPort",
            f"{ports}",
        )
    else:
        host = next((p.get("hostPort") for p in ports if p.get("name") == "http"), None)
        checks.check(
            host == 80,
            f"{name}: container port `http` is published on host port 80",
            f"hostPort {host}",
        )

    # Non-root on a read-only root filesystem.
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    checks.check(
        sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
        and isinstance(user, int)
        and user != 0,
        f"{name}: runs as a non-root numeric user ({user})",
    )
    checks.check(
        sc.get("readOnlyRootFilesystem") is True
        and sc.get("allowPrivilegeEscalation") is False
        and "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
        f"{name}: read-only root filesystem, no privilege escalation, all capabilities dropped",
        f"{sc}",
    )
    checks.check(
        "sysctls" not in pod_sc and "privileged" not in sc,
        f"{name}: no sysctls and no privileged flag",
    )
    resources = container.get("resources") or {}
    checks.check(
        {"cpu", "memory"} <= set(resources.get("requests") or {})
        and "memory" in (resources.get("limits") or {}),
        f"{name}: cpu and memory requests and a memory limit",
        f"{resources}",
    )


def check_service(name, objs, daemonset, container, checks):
    """The Service in front of the gateway pods reaches their listener."""
    labels = daemonset["spec"]["template"]["metadata"].get("labels") or {}
    ns = daemonset["metadata"].get("namespace")
    services = [
        o for o in objs if o.get("kind") == "Service" and o["metadata"].get("namespace") == ns
    ]
    for svc in services:
        selector = svc["spec"].get("selector") or {}
        targets = [
            container_port(container, p.get("targetPort", p.get("port")))
            for p in svc["spec"].get("ports") or []
        ]
        checks.check(
            bool(selector)
            and selector.items() <= labels.items()
            and targets == [container_port(container, "http")],
            f"{name}: {kn(svc)} selects the DaemonSet's pods and targets their `http` port",
            f"selector {selector}, target ports {targets}",
        )


# === 5. the example backend ===


def check_example(objs, configs, checks):
    name = "httpbin"
    deployment = one(objs, "Deployment", checks, name)
    service = one(objs, "Service", checks, name)
    if deployment is None or service is None:
        return
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    checks.check(spec.get("replicas") == 3, f"{name}: 3 replicas", f"{spec.get('replicas')}")
    checks.check(
        ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("port") is not None,
        f"{name}: an HTTP readiness probe",
    )
    sleep = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get(
        "seconds"
    )
    grace = pod.get("terminationGracePeriodSeconds", 30)
    checks.check(
        isinstance(sleep, int) and 0 < sleep < grace,
        f"{name}: a preStop sleep ({sleep} s) shorter than terminationGracePeriodSeconds ({grace})",
    )
    labels = spec["template"]["metadata"].get("labels") or {}
    selector = service["spec"].get("selector") or {}
    checks.check(
        bool(selector) and selector.items() <= labels.items(),
        f"{name}: the Service selects the Deployment's pods",
    )
    ns = service["metadata"].get("namespace")
    for cname, config in configs.items():
        registries = {r.get("name"): r for r in config.get("registries") or []}
        for upstream in config.get("upstreams") or []:
            d = upstream.get("discovery") or {}
            if (d.get("namespace"), d.get("service")) != (ns, service["metadata"]["name"]):
                continue
            port = next(
                (
                    p
                    for p in service["spec"]["ports"]
                    if d.get("port") in (p.get("port"), p.get("name"))
                ),
                None,
            )
            checks.check(
                port is not None and container_port(container, port.get("targetPort")) is not None,
                f"{cname}: upstream {upstream['name']} names a port of Service"
                f" {ns}/{service['metadata']['name']} that reaches a container port",
                f"port {d.get('port')!r}",
            )
            pattern = (registries.get(d.get("registry")) or {}).get("namespaces")
            checks.check(
                d.get("registry") in registries
                and (pattern is None or re.search(pattern, ns) is not None),
                f"{cname}: registry {d.get('registry')} watches namespace {ns}",
                f"namespaces {pattern!r}",
            )
            break
        else:
            checks.check(
                False, f"{cname}: an upstream discovers Service {ns}/{service['metadata']['name']}"
            )


def bound_to_strait(name, binding, checks):
    checks.check(
        binding.get("subjects")
        == [{"kind": "ServiceAccount", "name": "strait", "namespace": "strait"}],
        f"{name}: bound to ServiceAccount strait/strait only",
        f"{binding.get('subjects')}",
    )


def check_tls_secrets(name, objs, checks):
    kinds = sorted(o.get("kind", "") for o in objs)
    checks.check(kinds == ["Role", "RoleBinding"], f"{name}: one Role and one RoleBinding", f"{kinds}")
    role = next((o for o in objs if o.get("kind") == "Role"), None)
    binding = next((o for o in objs if o.get("kind") == "RoleBinding"), None)
    if not role or not binding:
        return
    rules = role.get("rules") or []
    for i, rule in enumerate(rules):
        checks.check(
            rule.get("apiGroups") == [""]
            and rule.get("resources") == ["secrets"]
            and set(rule.get("verbs") or []) <= {"get", "list", "watch"}
            and bool(rule.get("resourceNames"))
            and set(rule) == {"apiGroups", "resources", "verbs", "resourceNames"},
            f"{name}: rule {i} grants only get/list/watch on named secrets",
            f"{rule}",
        )
    checks.check(bool(rules), f"{name}: the Role has rules")
    ns = role["metadata"].get("namespace")
    ref = binding.get("roleRef") or {}
    checks.check(
        binding["metadata"].get("namespace") == ns
        and ref.get("kind") == "Role"
        and ref.get("name") == role["metadata"]["name"],
        f"{name}: the RoleBinding binds the Role in namespace {ns}",
        f"{ref}",
    )
    bound_to_strait(name, binding, checks)


def check_node_zone(name, objs, checks):
    kinds = sorted(o.get("kind", "") for o in objs)
    checks.check(
        kinds == ["ClusterRole", "ClusterRoleBinding"],
        f"{name}: one ClusterRole and one ClusterRoleBinding",
        f"{kinds}",
    )
    role = next((o for o in objs if o.get("kind") == "ClusterRole"), None)
    binding = next((o for o in objs if o.get("kind") == "ClusterRoleBinding"), None)
    if not role or not binding:
        return
    checks.check(
        role.get("rules") == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
        and "aggregationRule" not in role,
        f"{name}: the ClusterRole grants only get on nodes",
        f"{role.get('rules')}",
    )
    ref = binding.get("roleRef") or {}
    checks.check(
        ref.get("kind") == "ClusterRole" and ref.get("name") == role["metadata"]["name"],
        f"{name}: the ClusterRoleBinding binds that ClusterRole",
        f"{ref}",
    )
    bound_to_strait(name, binding, checks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strait", required=True, help="the strait binary")
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("renders", nargs="+", metavar="NAME=FILE")
    args = parser.parse_args()
    checks = Checks()
    renders = {}
    for item in args.renders:
        name, _, path = item.partition("=")
        with open(path) as f:
            try:
                renders[name] = [o for o in yaml.safe_load_all(f) if o]
            except yaml.YAMLError as e:
                checks.check(False, f"{name}: the render is YAML", str(e))
                renders[name] = []
        checks.check(bool(renders[name]), f"{name}: the render has objects")

    configs = {}
    for name, objs in renders.items():
        check_schemas(name, objs, args.kubernetes_version, checks)
        if name == "tls-secrets":
            check_tls_secrets(name, objs, checks)
            continue
        if name == "node-zone":
            check_node_zone(name, objs, checks)
            continue
        if not name.startswith("gateway"):
            rbac = [kn(o) for o in objs if o.get("kind") in RBAC_KINDS]
            checks.check(not rbac, f"{name}: no RBAC objects", f"{rbac}")
            continue
        daemonset = one(objs, "DaemonSet", checks, name)
        check_rbac(name, objs, daemonset, checks)
        found = daemonset and mounted_config(name, objs, daemonset, checks)
        if not found:
            continue
        container, _, text = found
        check_strait(name, args.strait, text, checks)
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            checks.check(False, f"{name}: the config is YAML", str(e))
            continue
        configs[name] = config
        check_daemonset(name, daemonset, container, config, checks)
        check_service(name, objs, daemonset, container, checks)
    if "httpbin" in renders:
        check_example(renders["httpbin"], configs, checks)

    print(f"deploy: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
