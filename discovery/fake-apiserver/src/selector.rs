//! Label and field selectors: parsing the query parameters and matching stored objects.
//! Pure; runs on the server's runtime thread inside request handlers and watch pumps.
//!
//! Label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by
//! commas. Field selectors: `metadata.name` and `metadata.namespace` with `=`, `==`, `!=`, the
//! only fields upstream supports for the kinds served here.

use serde_json::Value;

/// A parse failure, phrased as upstream's 400 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SelectorError(pub(crate) String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<LabelReq>);

/// A field-selector requirement on `metadata.name` or `metadata.namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    field: Field,
    value: String,
    equal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// A parsed `fieldSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<FieldReq>);

/// Both selectors of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    /// Whether either selector restricts anything (upstream then omits `remainingItemCount`).
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }

    /// Whether a stored object (with `metadata`) matches both selectors.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(key: &str, rest: &str, raw: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "unable to parse requirement: found '{raw}', expected: '('"
            ))
        })?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() || !values.iter().all(|v| valid_label_value(v)) {
        return Err(SelectorError(format!(
            "unable to parse requirement: invalid values for key {key:?}: {inner:?}"
        )));
    }
    Ok(values)
}

fn parse_label_req(raw: &str) -> Result<LabelReq, SelectorError> {
    let part = raw.trim();
    let bad_key = |k: &str| {
        SelectorError(format!(
            "unable to parse requirement: invalid label key \"{k}\""
        ))
    };
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return if valid_label_key(key) {
            Ok(LabelReq::NotExists(key.to_string()))
        } else {
            Err(bad_key(key))
        };
    }
    if let Some((key, value)) = part.split_once("!=") {
        let (key, value) = (key.trim(), value.trim());
        if !valid_label_key(key) {
            return Err(bad_key(key));
        }
        if !valid_label_value(value) {
            return Err(SelectorError(format!(
                "unable to parse requirement: invalid label value: \"{value}\""
            )));
        }
        return Ok(LabelReq::NotEquals(key.to_string(), value.to_string()));
    }
    if let Some((key, value)) = part.split_once('=') {
        let value = value.strip_prefix('=').unwrap_or(value);
        let (key, value) = (key.trim(), value.trim());
        if !valid_label_key(key) {
            return Err(bad_key(key));
        }
        if !valid_label_value(value) {
            return Err(SelectorError(format!(
                "unable to parse requirement: invalid label value: \"{value}\""
            )));
        }
        return Ok(LabelReq::Equals(key.to_string(), value.to_string()));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if !valid_label_key(key) {
        return Err(bad_key(key));
    }
    if rest.is_empty() {
        return Ok(LabelReq::Exists(key.to_string()));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(LabelReq::NotIn(key.to_string(), parse_set(key, set, raw)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(LabelReq::In(key.to_string(), parse_set(key, set, raw)?));
    }
    Err(SelectorError(format!(
        "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
    )))
}

impl LabelSelector {
    /// Parses a `labelSelector` value; an empty string selects everything.
    pub(crate) fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        if s.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        split_top_level(s)
            .into_iter()
            .map(parse_label_req)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelReq::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        })
    }
}

impl FieldSelector {
    /// Parses a `fieldSelector` value; an empty string selects everything.
    pub(crate) fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut reqs = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(SelectorError(format!(
                        "\"{other}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )))
                }
            };
            reqs.push(FieldReq {
                field,
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector(reqs))
    }

    fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|req| {
            let path = match req.field {
                Field::Name => "/metadata/name",
                Field::Namespace => "/metadata/namespace",
            };
            let actual = obj.pointer(path).and_then(Value::as_str).unwrap_or("");
            (actual == req.value) == req.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, labels: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "labels": labels}})
    }

    #[test]
    fn equality_inequality_and_existence_combine_with_and() {
        let sel = LabelSelector::parse("app=web,tier!=db,team").unwrap();
        assert!(sel.matches(&obj("a", "x", json!({"app": "web", "team": "t"}))));
        assert!(!sel.matches(&obj("a", "x", json!({"app": "web"}))));
        assert!(!sel.matches(&obj(
            "a",
            "x",
            json!({"app": "web", "team": "t", "tier": "db"})
        )));
        assert!(LabelSelector::parse("app==web").unwrap().matches(&obj(
            "a",
            "x",
            json!({"app": "web"})
        )));
    }

    #[test]
    fn set_based_and_negated_existence_requirements_parse() {
        let sel = LabelSelector::parse("env in (prod, staging),!legacy,tier notin (db)").unwrap();
        assert!(sel.matches(&obj("a", "x", json!({"env": "prod"}))));
        assert!(!sel.matches(&obj("a", "x", json!({"env": "dev"}))));
        assert!(!sel.matches(&obj("a", "x", json!({"env": "prod", "legacy": "1"}))));
        assert!(!sel.matches(&obj("a", "x", json!({"env": "prod", "tier": "db"}))));
    }

    #[test]
    fn bad_label_selectors_are_rejected() {
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn field_selector_supports_name_and_namespace_only() {
        let sel = FieldSelector::parse("metadata.namespace=prod,metadata.name!=b").unwrap();
        assert!(sel.matches(&obj("prod", "a", json!({}))));
        assert!(!sel.matches(&obj("prod", "b", json!({}))));
        assert!(!sel.matches(&obj("dev", "a", json!({}))));
        let err = FieldSelector::parse("spec.x=1").unwrap_err();
        assert_eq!(
            err.0,
            "\"spec.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }
}
