//! Bearer-token authentication and per-resource 403s (KUBE-API.md §6). The state lives behind a
//! mutex in `Shared`: the test's thread changes it (`set_token`, `forbid`), the server's runtime
//! thread reads it once per request.

use std::collections::BTreeSet;
use std::hash::BuildHasher;

use crate::kind::Kind;
use crate::status::StatusError;

/// Who may read what.
#[derive(Debug, Clone)]
pub(crate) struct AuthState {
    /// The one valid bearer token; rotated by `set_token`.
    pub(crate) token: String,
    /// Requests without an `Authorization` header are let through (kubectl over plain http
    /// sends no credentials). A wrong token is refused either way.
    pub(crate) anonymous_reads: bool,
    /// Resources answered with 403 Forbidden for every verb.
    pub(crate) forbidden: BTreeSet<Kind>,
}

/// A random-enough token for a test server (not a secret: it guards nothing real).
pub(crate) fn random_token() -> String {
    let state = std::collections::hash_map::RandomState::new();
    format!(
        "fake-{:016x}{:016x}",
        state.hash_one(1u8),
        state.hash_one(2u8)
    )
}

impl AuthState {
    /// Checks the `Authorization` header; `Ok(true)` when a valid token was sent,
    /// `Ok(false)` for an allowed anonymous request.
    pub(crate) fn authenticate(&self, authorization: Option<&[u8]>) -> Result<bool, StatusError> {
        let Some(header) = authorization else {
            return if self.anonymous_reads {
                Ok(false)
            } else {
                Err(StatusError::unauthorized())
            };
        };
        let header = std::str::from_utf8(header).map_err(|_| StatusError::unauthorized())?;
        let (scheme, token) = header.trim().split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("bearer") && token.trim() == self.token {
            Ok(true)
        } else {
            Err(StatusError::unauthorized())
        }
    }

    /// 403 when the resource is forbidden.
    pub(crate) fn authorize(
        &self,
        kind: Kind,
        verb: &str,
        namespace: Option<&str>,
    ) -> Result<(), StatusError> {
        if self.forbidden.contains(&kind) {
            Err(StatusError::forbidden(kind, verb, namespace))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(anonymous_reads: bool) -> AuthState {
        AuthState {
            token: "t0k".into(),
            anonymous_reads,
            forbidden: [Kind::Endpoints].into(),
        }
    }

    #[test]
    fn bearer_token_must_match_and_absence_depends_on_anonymous_reads() {
        assert!(state(false).authenticate(Some(b"Bearer t0k")).unwrap());
        assert!(state(false).authenticate(Some(b"bearer t0k")).unwrap());
        assert_eq!(
            state(false)
                .authenticate(Some(b"Bearer nope"))
                .unwrap_err()
                .code,
            401
        );
        assert_eq!(
            state(true)
                .authenticate(Some(b"Basic dTpw"))
                .unwrap_err()
                .code,
            401
        );
        assert_eq!(state(false).authenticate(None).unwrap_err().code, 401);
        assert!(!state(true).authenticate(None).unwrap());
    }

    #[test]
    fn forbidden_resources_get_403_naming_the_group_and_scope() {
        let e = state(false)
            .authorize(Kind::Endpoints, "watch", Some("prod"))
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(e.message.contains(
            "cannot watch resource \"endpoints\" in API group \"\" in the namespace \"prod\""
        ));
        assert!(state(false)
            .authorize(Kind::EndpointSlice, "list", None)
            .is_ok());
    }
}
