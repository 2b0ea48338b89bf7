//! The two proxies under test and how a roll reaches each: strait through EndpointSlice
//! changes on the fake API server (which this process runs), nginx through a rewritten
//! upstream list and `nginx -s reload`. Plus the probes that check what a proxy answers from.
//!
//! Runs on: the bench's main thread (the fake API server has its own). Blocks and sleeps
//! between roll steps on purpose: it is the roll's clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use strait_fake_apiserver::{FakeApiServer, Options};

use crate::{signal, Pod, Setup, Timeline, Variant, HOST, NAMESPACE, SERVICE};

pub(crate) enum Proxy {
    // Boxed: the strait rig (with its fake API server) is much the larger.
    Strait(Box<StraitRig>),
    Nginx(NginxRig),
}

impl Proxy {
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Proxy::Strait(s) => s.addr,
            Proxy::Nginx(n) => n.addr,
        }
    }

    /// Stops the proxy (SIGTERM, wait). Dropping a `Proxy` does the same, ignoring errors.
    pub(crate) fn stop(mut self) -> Result<()> {
        stop_child(self.child())
    }

    fn child(&mut self) -> &mut Child {
        match self {
            Proxy::Strait(s) => &mut s.child,
            Proxy::Nginx(n) => &mut n.child,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = stop_child(self.child());
    }
}

/// SIGTERM and wait, unless it has exited (nginx's master then stops its workers).
fn stop_child(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_none() {
        signal(child, "TERM")?;
        child.wait()?;
    }
    Ok(())
}

/// Endpoint conditions of one pod in the slice.
#[derive(Clone, Copy)]
struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

const STARTING: Conditions = Conditions {
    ready: false,
    serving: false,
    terminating: false,
};
const READY: Conditions = Conditions {
    ready: true,
    serving: true,
    terminating: false,
};
const TERMINATING: Conditions = Conditions {
    ready: false,
    serving: true,
    terminating: true,
};
const STOPPING: Conditions = Conditions {
    ready: false,
    serving: false,
    terminating: true,
};

/// strait following the fake API server.
pub(crate) struct StraitRig {
    addr: SocketAddr,
    child: Child,
    api: FakeApiServer,
    /// The slice's endpoints, in order.
    endpoints: Vec<(SocketAddr, Conditions)>,
}

impl StraitRig {
    pub(crate) fn start(setup: &Setup, pods: &VecDeque<Pod>, dir: &Path) -> Result<StraitRig> {
        let a = &setup.args;
        let api = FakeApiServer::start(Options::default());
        api.apply_yaml(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {}}}\n",
            a.pod_port
        ));
        let config = format!(
            "workers: 1
admin: {{listen: '127.0.0.1:0'}}
listeners:
  - name: http
    address: {addr}
access_log:
  enabled: false
registries:
  - name: bench
    server: {url}
    token: {token}
upstreams:
  - name: web
    discovery: {{registry: bench, namespace: {NAMESPACE}, service: {SERVICE}, port: 80}}
services:
  - name: web
    hosts: [{HOST}]
    path_prefix: /
    upstream: web
",
            addr = a.strait_addr,
            url = api.url(),
            token = api.token(),
        );
        let path = dir.join("strait.yaml");
        fs::write(&path, config)?;
        let mut rig = StraitRig {
            addr: a.strait_addr,
            child: spawn_proxy(
                setup,
                Command::new(&setup.strait_bin)
                    .args(["run", "--config"])
                    .arg(&path),
                &dir.join("strait.log"),
            )?,
            api,
            endpoints: pods.iter().map(|p| (p.addr, READY)).collect(),
        };
        rig.apply();
        Ok(rig)
    }

    fn apply(&mut self) {
        let mut y = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {SERVICE}-abc12\n  namespace: {NAMESPACE}\n  labels:\n    kubernetes.io/service-name: {SERVICE}\naddressType: IPv4\nports:\n- {{name: http, port: {}, protocol: TCP}}\nendpoints:\n",
            self.endpoints.first().map_or(0, |e| e.0.port())
        );
        for (addr, c) in &self.endpoints {
            let _ = writeln!(
                y,
                "- addresses: [{}]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}",
                addr.ip(),
                c.ready,
                c.serving,
                c.terminating
            );
        }
        self.api.apply_yaml(&y);
    }

    fn set(&mut self, addr: SocketAddr, c: Conditions, timeline: &mut Timeline, what: &str) {
        match self.endpoints.iter_mut().find(|e| e.0 == addr) {
            Some(e) => e.1 = c,
            None => self.endpoints.push((addr, c)),
        }
        self.apply();
        timeline.note(&format!("{addr} {what}"));
    }

    /// One roll; returns the old pod, out of the slice, still running.
    pub(crate) fn roll(
        &mut self,
        setup: &Setup,
        pods: &mut VecDeque<Pod>,
        new: SocketAddr,
        variant: Variant,
        timeline: &mut Timeline,
    ) -> Result<Pod> {
        let step = setup.args.step;
        let mut pod = Pod::spawn(setup, new)?;
        self.set(new, STARTING, timeline, "created: not ready");
        pod.wait_listening()?;
        timeline.note(&format!("{new} listening"));
        std::thread::sleep(step);
        self.set(new, READY, timeline, "ready");
        pods.push_back(pod);
        let mut old = pods.pop_front().context("a pod to replace")?;
        if variant == Variant::Crash {
            old.kill();
            timeline.note(&format!("{} SIGKILL while ready (crash)", old.addr));
        }
        std::thread::sleep(step);
        self.set(old.addr, TERMINATING, timeline, "terminating (serving)");
        std::thread::sleep(step);
        self.set(old.addr, STOPPING, timeline, "terminating, not serving");
        std::thread::sleep(step);
        self.endpoints.retain(|e| e.0 != old.addr);
        self.apply();
        timeline.note(&format!("{} removed from the slice", old.addr));
        Ok(old)
    }
}

/// nginx with a static upstream list, rewritten and reloaded per roll.
pub(crate) struct NginxRig {
    addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl NginxRig {
    pub(crate) fn start(setup: &Setup, pods: &VecDeque<Pod>, dir: &Path) -> Result<NginxRig> {
        let dir = dir.join("nginx");
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let addr = setup.args.nginx_addr;
        write_nginx_conf(&dir, addr, pods.iter().map(|p| p.addr))?;
        let child = spawn_proxy(
            setup,
            Command::new(&setup.nginx_bin).args(nginx_args(&dir)),
            &dir.join("stderr.log"),
        )?;
        Ok(NginxRig { addr, child, dir })
    }

    /// One roll; returns the old pod, out of the upstream list, still running.
    pub(crate) fn roll(
        &mut self,
        setup: &Setup,
        pods: &mut VecDeque<Pod>,
        new: SocketAddr,
        variant: Variant,
        timeline: &mut Timeline,
    ) -> Result<Pod> {
        let mut pod = Pod::spawn(setup, new)?;
        pod.wait_listening()?;
        timeline.note(&format!("{new} listening"));
        // The same wait strait's side has between listening and ready.
        std::thread::sleep(setup.args.step);
        pods.push_back(pod);
        let mut old = pods.pop_front().context("a pod to replace")?;
        if variant == Variant::Crash {
            old.kill();
            timeline.note(&format!(
                "{} SIGKILL while in the upstream list (crash)",
                old.addr
            ));
            std::thread::sleep(setup.args.step);
        }
        write_nginx_conf(&self.dir, self.addr, pods.iter().map(|p| p.addr))?;
        let status = Command::new(&setup.nginx_bin)
            .args(nginx_args(&self.dir))
            .args(["-s", "reload"])
            .status()
            .context("nginx -s reload")?;
        ensure!(status.success(), "nginx -s reload failed");
        timeline.note(&format!("{new} in, {} out: nginx -s reload sent", old.addr));
        Ok(old)
    }
}

fn nginx_args(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "-p".into(),
        format!("{d}/"),
        "-c".into(),
        format!("{d}/nginx.conf"),
        "-e".into(),
        format!("{d}/error.log"),
    ]
}

/// nginx as run.sh sets it up, with the pods as a static upstream.
fn write_nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    pods: impl Iterator<Item = SocketAddr>,
) -> Result<()> {
    let d = dir.display();
    let servers: String = pods.map(|p| format!("        server {p};\n")).collect();
    let conf = format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream pods {{
{servers}        keepalive 64;
        keepalive_requests 1000;
        keepalive_timeout 30s;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://pods;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            # nginx's default, spelled out: after an error connecting, sending or reading the
            # response head, or a timeout, try the next server (idempotent requests only).
            proxy_next_upstream error timeout;
        }}
    }}
}}
"#
    );
    // Written whole then renamed, so a reload never reads half a file.
    let tmp = dir.join("nginx.conf.tmp");
    fs::write(&tmp, conf)?;
    fs::rename(&tmp, dir.join("nginx.conf"))?;
    Ok(())
}

/// Starts a proxy on the proxy core, stdout and stderr into `log`.
fn spawn_proxy(setup: &Setup, cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = File::create(log)?;
    let mut taskset = Command::new("taskset");
    taskset
        .arg("-c")
        .arg(setup.args.proxy_core.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(out.try_clone()?)
        .stderr(out);
    taskset
        .spawn()
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))
}

// === Probes ===

/// `GET /` with `Connection: close`: the status and `X-Backend`.
fn probe(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let backend = text
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-backend")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, backend))
}

/// Waits until the proxy answers 200 from every pod.
pub(crate) fn wait_serving(
    addr: SocketAddr,
    pods: &VecDeque<Pod>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    let mut last = String::new();
    while Instant::now() < deadline {
        match probe(addr) {
            Ok((200, b)) => {
                seen.insert(b);
                if pods.iter().all(|p| seen.contains(&p.addr.to_string())) {
                    return Ok(());
                }
            }
            Ok((s, _)) => last = format!("status {s}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{addr} did not answer 200 from every pod within {timeout:?} (last: {last})")
}

/// After the rolls: `None` if 30 requests reach exactly the current pods, else what did.
pub(crate) fn final_backends(addr: SocketAddr, pods: &VecDeque<Pod>) -> Option<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let key = match probe(addr) {
            Ok((200, b)) => b,
            Ok((s, _)) => format!("status {s}"),
            Err(e) => format!("error {e}"),
        };
        *seen.entry(key).or_default() += 1;
    }
    let want: BTreeSet<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let got: BTreeSet<String> = seen.keys().cloned().collect();
    (got != want).then(|| format!("{seen:?}, expected {want:?}"))
}
