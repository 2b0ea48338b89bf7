//! `Status` objects for failed requests and watch ERROR events, shaped like upstream's
//! (KUBE-API.md §2, §5, §6). Pure; runs on the server's runtime thread.

use serde_json::{json, Value};

use crate::kind::Kind;

/// A failure answered with a `Status` body.
#[derive(Debug, Clone)]
pub(crate) struct StatusError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
    /// `metadata.continue` (an expired continue token gets a fresh, inconsistent one).
    pub(crate) continue_token: Option<String>,
}

impl StatusError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> StatusError {
        StatusError {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> StatusError {
        self.details = Some(details);
        self
    }

    /// The `Status` object.
    pub(crate) fn to_json(&self) -> Value {
        let mut metadata = json!({});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = json!(token);
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    pub(crate) fn unauthorized() -> StatusError {
        StatusError::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn forbidden(kind: Kind, verb: &str, namespace: Option<&str>) -> StatusError {
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let mut details = json!({"kind": kind.plural()});
        if !kind.group().is_empty() {
            details["group"] = json!(kind.group());
        }
        StatusError::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:strait:strait\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
                kind.qualified_plural(),
                kind.plural(),
                kind.group()
            ),
        )
        .with_details(details)
    }

    pub(crate) fn not_found_path() -> StatusError {
        StatusError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn not_found_object(kind: Kind, name: &str) -> StatusError {
        let mut details = json!({"name": name, "kind": kind.plural()});
        if !kind.group().is_empty() {
            details["group"] = json!(kind.group());
        }
        StatusError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_plural()),
        )
        .with_details(details)
    }

    pub(crate) fn method_not_allowed(method: &str) -> StatusError {
        StatusError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method} is not served by the fake API server)"),
        )
        .with_details(json!({}))
    }

    pub(crate) fn not_acceptable(accept: &str) -> StatusError {
        StatusError::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: application/json (asked for {accept:?})"),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> StatusError {
        StatusError::new(400, "BadRequest", message)
    }

    pub(crate) fn invalid_list_options(kind: Kind, message: &str) -> StatusError {
        StatusError::new(
            422,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {message}"),
        )
        .with_details(json!({"kind": "ListOptions", "group": "meta.k8s.io",
            "causes": [{"reason": "FieldValueInvalid", "message": message}],
            "resource": kind.plural()}))
    }

    /// A list at a compacted version (`resourceVersionMatch=Exact`).
    pub(crate) fn list_expired() -> StatusError {
        StatusError::new(
            410,
            "Expired",
            "The resourceVersion for the provided list is too old.",
        )
    }

    /// A continue token from before the last compaction; carries a fresh token.
    pub(crate) fn continue_expired(fresh_token: String) -> StatusError {
        let mut e = StatusError::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
        e.continue_token = Some(fresh_token);
        e
    }

    /// A watch from a compacted version: sent as an in-stream ERROR event, never as HTTP 410.
    pub(crate) fn watch_expired(rv: u64, compacted: u64) -> StatusError {
        StatusError::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({compacted})"),
        )
    }

    pub(crate) fn too_large_rv(rv: u64, current: u64) -> StatusError {
        StatusError::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {rv}, current: {current}"),
        )
        .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge",
            "message": "Too large resource version"}], "retryAfterSeconds": 1}))
    }
}
