//! A rolling update end to end, the way a Deployment does it (maxSurge 1,
//! maxUnavailable 0): three echo pods as real processes behind an EndpointSlice in the
//! fake API server, the gateway in process (seed config, two workers) in front, 32
//! keep-alive clients sending GETs and PUTs through it, and three rolls in a row.
//!
//! One roll: a new pod starts and enters the slice not ready; once it listens it turns
//! ready; the oldest pod turns terminating (still serving), then not serving, then leaves
//! the slice. Its process ends in one of three ways ([`Exit`]): on SIGTERM a grace period
//! after it left the slice (a preStop sleep); SIGKILLed the instant it leaves the slice;
//! or SIGKILLed the instant it turns terminating (no preStop hook and no graceful
//! shutdown: the gateway learns of it only after the pod is gone, so requests in flight
//! to it and new ones sent before the update arrives must be retried elsewhere). Steps
//! are paced by the load (so many more requests completed), never by sleeps.
//!
//! What a user would check: no request fails; every answer came from a pod that was
//! running (and in the slice as ready); after the rolls only the new pods get traffic,
//! and each of them does.
//!
//! Runs on: the test thread drives the roll; the load, the API server, discovery and the
//! workers run on threads of their own, the pods in processes of their own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use strait_fake_apiserver::{FakeApiServer, Options};

use crate::support::kube::{seed_config, service, slice};
use crate::support::load::{Load, Sample};
use crate::support::pod::Pod;
use crate::support::{eventually, Harness, SETTLE};

const HOST: &str = "sd.httpbin.org";
const PATH: &str = "/v1/anything";
/// Client connections of the load.
const CONNECTIONS: usize = 32;
/// Requests completed between two steps of a roll.
const STEP: u64 = 300;
/// Pods before, during (plus one) and after a roll; also the number of rolls.
const REPLICAS: usize = 3;
/// Failures and violations quoted in a failure message.
const QUOTED: usize = 8;

/// How an old pod's process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// SIGTERM a grace period after it left the slice, once traffic to it stopped (a
    /// preStop sleep).
    GraceAfterRemoval,
    /// SIGKILL the instant it leaves the slice.
    KillOnRemoval,
    /// SIGKILL the instant it turns terminating.
    KillOnTermination,
}

/// An endpoint's `(ready, serving, terminating)` conditions.
type Conditions = (bool, bool, bool);
const STARTING: Conditions = (false, false, false);
const READY: Conditions = (true, true, false);
const TERMINATING: Conditions = (false, true, true);
const STOPPING: Conditions = (false, false, true);

#[test]
fn a_rolling_update_with_graceful_pod_exits_fails_no_request() {
    rolling_update(150, Exit::GraceAfterRemoval);
}

#[test]
fn a_rolling_update_that_kills_old_pods_as_they_leave_the_slice_fails_no_request() {
    rolling_update(160, Exit::KillOnRemoval);
}

#[test]
fn a_rolling_update_that_kills_old_pods_as_they_turn_terminating_fails_no_request() {
    rolling_update(170, Exit::KillOnTermination);
}

/// Three rolls on pods 127.0.0.`first_ip`…, with the load running throughout, then the
/// checks.
fn rolling_update(first_ip: u8, exit: Exit) {
    let api = FakeApiServer::start(Options::default());
    let mut roll = Rollout::start(&api, first_ip);
    let h = Harness::with_addrs(&format!("workers: 2\n{}", seed_config(&api, true)), &[]);
    eventually("the gateway to route to the pods", || {
        (h.get(HOST, PATH).status == 200).then_some(())
    });
    // One worker routes with the synced table: it was published, at this version or an
    // earlier one. Wait for the other worker too (readiness alone does not say so).
    let status = h.gateway_ref().status();
    assert!(
        status.wait_applied(status.version(), SETTLE),
        "every worker to swap in the synced table"
    );
    roll.step("load starts".into());
    let load = Load::start(h.addr, HOST, PATH, CONNECTIONS, u64::from(first_ip));
    load.advance(STEP);
    for n in 1..=REPLICAS {
        roll.roll_one(n, &load, exit);
    }
    roll.step("rolls done".into());
    let done = Instant::now();
    load.advance(2 * STEP);
    let samples = load.stop();
    let problems = roll.check(&samples, done);
    eprintln!("rolling update ({exit:?}): {}", roll.summary(&samples));
    assert!(
        problems.is_empty(),
        "rolling update ({exit:?}): {}\n\n{}\n\nsteps:\n{}",
        roll.summary(&samples),
        problems.join("\n\n"),
        roll.timeline(),
    );
}

/// The pods, the slice as last applied, and what happened when.
struct Rollout<'a> {
    api: &'a FakeApiServer,
    /// Every pod's address is 127.0.0.(`first_ip` + its index).
    first_ip: u8,
    /// The port every pod listens on.
    port: u16,
    /// Every pod started, old and new, by index.
    pods: Vec<Pod>,
    /// The slice's endpoints, oldest first: pod index and conditions.
    slice: Vec<(usize, Conditions)>,
    /// Per pod: when the slice first had it ready (taken before the apply).
    ready_at: Vec<Option<Instant>>,
    /// Each step and when it began.
    steps: Vec<(Instant, String)>,
}

impl<'a> Rollout<'a> {
    /// Starts the three first pods and applies the Service and the slice with them ready.
    fn start(api: &'a FakeApiServer, first_ip: u8) -> Rollout<'a> {
        let mut roll = Rollout {
            api,
            first_ip,
            port: 0,
            pods: Vec::new(),
            slice: Vec::new(),
            ready_at: Vec::new(),
            steps: Vec::new(),
        };
        for _ in 0..REPLICAS {
            let pod = roll.spawn();
            roll.port = roll.pods[pod].listening().port();
            roll.slice.push((pod, READY));
            roll.ready_at[pod] = Some(Instant::now());
        }
        api.apply_yaml(&service(roll.port));
        roll.apply();
        roll
    }

    /// Spawns the next pod (not yet listening); its index.
    fn spawn(&mut self) -> usize {
        let n = self.pods.len();
        let ip = format!("127.0.0.{}", usize::from(self.first_ip) + n);
        self.pods.push(Pod::spawn(&ip, self.port));
        self.ready_at.push(None);
        n
    }

    /// One roll: surge a new pod, then retire the oldest.
    fn roll_one(&mut self, n: usize, load: &Load, exit: Exit) {
        let new = self.spawn();
        self.set(
            new,
            STARTING,
            format!("roll {n}: new pod starting, not ready"),
        );
        self.pods[new].listening();
        self.set(new, READY, format!("roll {n}: new pod ready"));
        load.advance(STEP);
        let old = self.slice[0].0;
        self.set(old, TERMINATING, format!("roll {n}: old pod terminating"));
        if exit == Exit::KillOnTermination {
            self.step(format!("roll {n}: old pod SIGKILL"));
            self.pods[old].kill();
        }
        load.advance(STEP);
        self.set(old, STOPPING, format!("roll {n}: old pod not serving"));
        load.advance(STEP);
        self.slice.retain(|(p, _)| *p != old);
        self.step(format!("roll {n}: old pod removed: {}", self.name(old)));
        self.apply();
        match exit {
            Exit::KillOnTermination => {}
            Exit::KillOnRemoval => {
                self.step(format!("roll {n}: old pod SIGKILL"));
                self.pods[old].kill();
            }
            Exit::GraceAfterRemoval => {
                // The preStop sleep: long enough for the gateway to have stopped
                // sending to it.
                load.advance(STEP);
                let name = self.name(old);
                eventually(&format!("the gateway to stop sending to {name}"), || {
                    load.with_samples(|s| {
                        let recent = &s[s.len().saturating_sub(STEP as usize)..];
                        recent
                            .iter()
                            .all(|x| x.backend.as_deref() != Some(name.as_str()))
                            .then_some(())
                    })
                });
                self.step(format!("roll {n}: old pod SIGTERM"));
                self.pods[old].terminate();
            }
        }
        load.advance(STEP);
    }

    /// Sets `pod`'s conditions (adding it to the slice if new) and applies the slice.
    fn set(&mut self, pod: usize, conditions: Conditions, what: String) {
        self.step(format!("{what}: {}", self.name(pod)));
        match self.slice.iter_mut().find(|(p, _)| *p == pod) {
            Some(entry) => entry.1 = conditions,
            None => self.slice.push((pod, conditions)),
        }
        if conditions.0 && self.ready_at[pod].is_none() {
            self.ready_at[pod] = Some(Instant::now());
        }
        self.apply();
    }

    fn apply(&self) {
        let ips: Vec<String> = self
            .slice
            .iter()
            .map(|(p, _)| self.pods[*p].addr().ip().to_string())
            .collect();
        let endpoints: Vec<(&str, bool, bool, bool)> = self
            .slice
            .iter()
            .zip(&ips)
            .map(|((_, (r, s, t)), ip)| (ip.as_str(), *r, *s, *t))
            .collect();
        self.api.apply_yaml(&slice(self.port, &endpoints));
    }

    fn step(&mut self, what: String) {
        self.steps.push((Instant::now(), what));
    }

    /// The pod's `X-Backend`.
    fn name(&self, pod: usize) -> String {
        self.pods[pod].addr().to_string()
    }

    /// The pods that replaced the first ones.
    fn new_pods(&self) -> std::ops::Range<usize> {
        REPLICAS..self.pods.len()
    }

    /// Requests served per pod (by `X-Backend`), plus any unknown backend.
    fn per_pod(&self, samples: &[Sample]) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> =
            (0..self.pods.len()).map(|p| (self.name(p), 0)).collect();
        for s in samples.iter().filter(|s| s.failure.is_none()) {
            if let Some(b) = &s.backend {
                *counts.entry(b.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// One line of figures: requests, failures by kind, requests per pod.
    fn summary(&self, samples: &[Sample]) -> String {
        let puts = samples.iter().filter(|s| s.method == "PUT").count();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in samples.iter().filter_map(|s| s.failure.as_ref()) {
            *kinds.entry(f.kind()).or_default() += 1;
        }
        let took = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => b.received.duration_since(a.sent),
            _ => Default::default(),
        };
        let mut line = format!(
            "{} requests ({puts} PUT) in {:.1} s, {} failed {kinds:?}; per pod:",
            samples.len(),
            took.as_secs_f64(),
            kinds.values().sum::<usize>(),
        );
        for (pod, n) in self.per_pod(samples) {
            let _ = write!(line, " {pod}={n}");
        }
        line
    }

    /// `t` relative to the last step that began at or before it.
    fn when(&self, t: Instant) -> String {
        match self.steps.iter().rev().find(|(at, _)| *at <= t) {
            Some((at, what)) => format!(
                "+{:.1} ms after '{what}'",
                t.duration_since(*at).as_secs_f64() * 1e3
            ),
            None => "before the first step".into(),
        }
    }

    fn describe(&self, s: &Sample) -> String {
        format!(
            "{} (conn {}, {}, backend {}) sent {}, took {:.1} ms",
            s.failure
                .as_ref()
                .map_or_else(|| "ok".into(), ToString::to_string),
            s.conn,
            s.method,
            s.backend.as_deref().unwrap_or("-"),
            self.when(s.sent),
            s.received.duration_since(s.sent).as_secs_f64() * 1e3,
        )
    }

    fn quote(&self, title: &str, bad: &[&Sample]) -> String {
        let mut text = format!("{} {title}; the first ones:", bad.len());
        for s in bad.iter().take(QUOTED) {
            let _ = write!(text, "\n  {}", self.describe(s));
        }
        text
    }

    /// Every check; a message per one that fails. `done`: when the last roll ended.
    fn check(&self, samples: &[Sample], done: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        let failed: Vec<&Sample> = samples.iter().filter(|s| s.failure.is_some()).collect();
        if !failed.is_empty() {
            problems.push(self.quote("requests failed", &failed));
        }
        // Every answer came from a pod that ran, and was in the slice as ready, by then.
        let names: Vec<String> = (0..self.pods.len()).map(|p| self.name(p)).collect();
        let impossible: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.failure.is_none())
            .filter(|s| {
                let pod = names
                    .iter()
                    .position(|n| s.backend.as_deref() == Some(n.as_str()));
                !pod.is_some_and(|p| {
                    let pod = &self.pods[p];
                    s.received > pod.spawned
                        && pod.exited.is_none_or(|exit| s.sent < exit)
                        && self.ready_at[p].is_some_and(|ready| s.received > ready)
                })
            })
            .collect();
        if !impossible.is_empty() {
            problems.push(self.quote(
                "answers came from a pod not running, or not yet ready, at the time",
                &impossible,
            ));
        }
        // After the rolls: the new pods, and only they, get traffic.
        let after: Vec<&Sample> = samples.iter().filter(|s| s.sent > done).collect();
        let mut seen: Vec<&str> = after.iter().filter_map(|s| s.backend.as_deref()).collect();
        seen.sort_unstable();
        seen.dedup();
        let new: Vec<String> = self.new_pods().map(|p| self.name(p)).collect();
        if seen != new {
            problems.push(format!(
                "after the rolls, {} requests went to {seen:?}, not to the new pods {new:?}",
                after.len()
            ));
        }
        let counts = self.per_pod(samples);
        let idle: Vec<&String> = new.iter().filter(|p| counts[*p] == 0).collect();
        if !idle.is_empty() {
            problems.push(format!("new pods that served nothing: {idle:?}"));
        }
        problems
    }

    fn timeline(&self) -> String {
        let start = self.steps.first().map(|(t, _)| *t);
        let mut text = String::new();
        for (t, what) in &self.steps {
            let ms = start.map_or(0.0, |s| t.duration_since(s).as_secs_f64() * 1e3);
            let _ = writeln!(text, "  {ms:8.1} ms  {what}");
        }
        text
    }
}
