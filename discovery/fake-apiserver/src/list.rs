//! LIST and GET (KUBE-API.md §2): resourceVersion semantics, `limit`/`continue` pagination over
//! a consistent snapshot (every page carries the same version; the opaque token is upstream's
//! base64 JSON), selectors, and 410 for a continue token older than the last compaction.
//! Runs on: the server's runtime thread; takes the store lock only to copy a snapshot.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::kind::Kind;
use crate::render::{self, Format};
use crate::route::Query;
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::server::{lock, Shared};
use crate::status::StatusError;
use crate::store::RvError;

/// Encodes a continue token the way upstream does.
pub(crate) fn encode_continue(rv: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), StatusError> {
    let bad = |why: &str| StatusError::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad("not base64"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no resourceVersion"))?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no start key"))?;
    Ok((rv, start.to_string()))
}

pub(crate) fn parse_selectors(query: &Query) -> Result<Selectors, StatusError> {
    Ok(Selectors {
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(|e| StatusError::bad_request(e.0))?,
        fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| StatusError::bad_request(e.0))?,
    })
}

/// Parses a numeric resourceVersion parameter.
pub(crate) fn parse_rv(raw: &str) -> Result<u64, StatusError> {
    raw.parse::<u64>().map_err(|_| {
        StatusError::bad_request(format!(
            "Invalid value: \"{raw}\": resourceVersion must be a number"
        ))
    })
}

/// Whether a stored object is in `namespace` (always, for an all-namespaces request).
pub(crate) fn in_namespace(obj: &Value, namespace: Option<&str>) -> bool {
    match namespace {
        None => true,
        Some(ns) => obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns),
    }
}

/// LIST a collection.
pub(crate) fn list(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    query: &Query,
    format: Format,
) -> Result<Value, StatusError> {
    let selectors = parse_selectors(query)?;
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| StatusError::bad_request(format!("limit: Invalid value: \"{l}\"")))?,
        None => 0,
    };
    let rv_param = query.get("resourceVersion").unwrap_or("");
    let rv_match = query.get("resourceVersionMatch").unwrap_or("");
    let token = query.get("continue").filter(|t| !t.is_empty());

    let store = lock(&shared.store);
    let current = store.rv();
    let (rv, start) = match token {
        Some(token) => {
            if !rv_param.is_empty() && rv_param != "0" {
                return Err(StatusError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, start) = decode_continue(token)?;
            if rv < store.compacted() {
                return Err(StatusError::continue_expired(encode_continue(
                    current, &start,
                )));
            }
            (rv, start)
        }
        None => {
            let rv = match (rv_param, rv_match) {
                ("", "") => current,
                ("", _) => {
                    return Err(StatusError::invalid_list_options(
                        kind,
                        "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ))
                }
                ("0", "" | "NotOlderThan") => current,
                (n, "Exact") => parse_rv(n)?,
                (n, "" | "NotOlderThan") => {
                    let n = parse_rv(n)?;
                    if n > current {
                        return Err(StatusError::too_large_rv(n, current));
                    }
                    current
                }
                (_, other) => {
                    return Err(StatusError::invalid_list_options(
                        kind,
                        &format!("resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""),
                    ))
                }
            };
            (rv, String::new())
        }
    };
    let objects = match store.snapshot(kind, rv) {
        Ok(objects) => objects,
        Err(RvError::Expired { .. }) => return Err(StatusError::list_expired()),
        Err(RvError::TooLarge { current }) => return Err(StatusError::too_large_rv(rv, current)),
    };
    drop(store);

    let mut matching = objects
        .range(start..)
        .filter(|(_, obj)| in_namespace(obj, namespace) && selectors.matches(obj));
    let mut page = Vec::new();
    let mut last_key = None;
    for (key, obj) in matching.by_ref() {
        if limit > 0 && page.len() as i64 == limit {
            // One more exists: this page ends before it.
            let remaining = 1 + matching.count();
            let mut metadata = json!({
                "resourceVersion": rv.to_string(),
                "continue": encode_continue(rv, &format!("{}\u{0}", last_key.unwrap_or(key))),
            });
            if selectors.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
            return Ok(render::list(kind, format, &page, metadata));
        }
        page.push(obj.as_ref());
        last_key = Some(key);
    }
    Ok(render::list(
        kind,
        format,
        &page,
        json!({"resourceVersion": rv.to_string()}),
    ))
}

/// GET one object.
pub(crate) fn get(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    format: Format,
) -> Result<Value, StatusError> {
    let (obj, rv) = {
        let store = lock(&shared.store);
        (store.get(kind, namespace.unwrap_or(""), name), store.rv())
    };
    let obj = obj.ok_or_else(|| StatusError::not_found_object(kind, name))?;
    Ok(render::object(kind, format, &obj, rv, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_a_bad_request() {
        let t = encode_continue(42, "ns/a\u{0}");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns/a\u{0}".to_string()));
        assert_eq!(decode_continue("!!!").unwrap_err().code, 400);
    }
}
