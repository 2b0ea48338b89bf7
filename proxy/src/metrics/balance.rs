//! The balancing part of `/metrics`: picks by locality (summed over workers), and from
//! the snapshot in force each checked endpoint's health check result, panic mode, and
//! the locality tier each upstream picks from.
//!
//! Runs on: the admin thread, at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use strait_discovery::spec::Prefer;
use strait_discovery::{Snapshot, Tier};

use super::{escape, family};

/// Writes the families; `picks` is per upstream, by `Tier as usize`.
pub(super) fn render(
    out: &mut String,
    picks: &BTreeMap<Arc<str>, [u64; 3]>,
    snapshot: Option<&Snapshot>,
) {
    family(
        out,
        "strait_upstream_picks_total",
        "counter",
        "Endpoints picked for upstreams with `locality`, by where the endpoint runs relative to this gateway (node, zone, any), summed over workers.",
    );
    for (upstream, counts) in picks {
        if counts.iter().all(|n| *n == 0) {
            continue;
        }
        for t in Tier::ALL {
            let _ = writeln!(
                out,
                "strait_upstream_picks_total{{upstream=\"{}\",locality=\"{}\"}} {}",
                escape(upstream),
                t.name(),
                counts[t as usize]
            );
        }
    }
    let ups = snapshot.map(|s| &s.upstreams[..]).unwrap_or_default();
    family(
        out,
        "strait_upstream_endpoint_check",
        "gauge",
        "1 for each endpoint of an upstream with `health_check`, labelled with its result (passing, failing, unchecked).",
    );
    for u in ups.iter().filter(|u| u.settings.health_check.is_some()) {
        for (e, c) in u.endpoints.iter().zip(u.checks.iter()) {
            let _ = writeln!(
                out,
                "strait_upstream_endpoint_check{{upstream=\"{}\",endpoint=\"{}\",result=\"{}\"}} 1",
                escape(&u.name),
                escape(&e.addr.to_string()),
                c.name()
            );
        }
    }
    family(
        out,
        "strait_upstream_panic",
        "gauge",
        "1 while every ready endpoint of the upstream fails its health check, so all are used (panic mode).",
    );
    for u in ups.iter().filter(|u| u.settings.health_check.is_some()) {
        let _ = writeln!(
            out,
            "strait_upstream_panic{{upstream=\"{}\"}} {}",
            escape(&u.name),
            u8::from(u.panic)
        );
    }
    family(
        out,
        "strait_upstream_locality",
        "gauge",
        "1 for the locality tier an upstream with `locality` picks from (node, zone, or any after falling back).",
    );
    for u in ups
        .iter()
        .filter(|u| u.settings.locality.prefer != Prefer::None)
    {
        let _ = writeln!(
            out,
            "strait_upstream_locality{{upstream=\"{}\",locality=\"{}\"}} 1",
            escape(&u.name),
            u.tier.name()
        );
    }
}
