//! A route's matches, backends, filters and rate limit (`services[].routes[]`), and the
//! request id header: each refused with its field when it contradicts itself or the
//! route.
//!
//! Runs on: the thread that loads the config. Pure.

use std::collections::{BTreeMap, HashSet};

use strait_discovery::route::check_regex;
use strait_discovery::spec::{
    Backend, DirectResponse, Filters, HashKey, HeaderEdits, PathMatch, RateKey, RateLimit,
    Redirect, Rewrite, ValueCondition, ValueMatch,
};

use super::{Checker, Result};
use crate::config::file::{
    FileBackend, FileDirectResponse, FileHash, FileHeaderEdits, FilePathMatch, FileRateKey,
    FileRateLimit, FileRedirect, FileRequestId, FileRewrite, FileRoute, FileValueMatch,
};
use crate::config::RequestIdConfig;
use crate::ratelimit::Rate;

/// Headers a route may not edit: the framing and the connection are the gateway's.
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "host",
];

/// What [`Checker::route_rules`] gives for a route.
pub(super) struct RouteRules {
    pub(super) path_match: PathMatch,
    pub(super) headers: Vec<ValueMatch>,
    pub(super) query: Vec<ValueMatch>,
    pub(super) backends: Vec<Backend>,
    pub(super) backend_hash: Option<HashKey>,
    pub(super) filters: Filters,
    pub(super) rate_limit: Option<RateLimit>,
}

impl RouteRules {
    /// The route answers itself (a redirect or a direct response): it needs no upstream.
    pub(super) fn answers(&self) -> bool {
        self.filters.redirect.is_some() || self.filters.direct_response.is_some()
    }
}

impl Checker<'_> {
    /// Takes the rule keys out of `route` (at `at`) and checks them.
    pub(super) fn route_rules(
        &self,
        at: &str,
        route: &mut FileRoute,
        upstreams: &HashSet<&str>,
    ) -> Result<RouteRules> {
        let path_match = match route.path_match {
            FilePathMatch::Prefix => PathMatch::Prefix,
            FilePathMatch::Exact => PathMatch::Exact,
            FilePathMatch::Regex => {
                check_regex(&route.path)
                    .map_err(|e| self.error(format!("{at}.path"), e.to_string()))?;
                PathMatch::Regex
            }
        };
        let headers = self.value_matches(
            &format!("{at}.headers"),
            std::mem::take(&mut route.headers),
            true,
        )?;
        let query = self.value_matches(
            &format!("{at}.query"),
            std::mem::take(&mut route.query),
            false,
        )?;
        let backends = match route.backends.take() {
            None => Vec::new(),
            Some(list) => self.backends(at, list, route.upstream.is_some(), upstreams)?,
        };
        let backend_hash = match route.hash.take() {
            None => None,
            Some(_) if backends.is_empty() => {
                return Err(self.error(
                    format!("{at}.hash"),
                    "`hash` sticks a client to one of `backends`; this route has none",
                ))
            }
            Some(h) => Some(self.route_hash(&format!("{at}.hash"), h)?),
        };
        let rewrite = match route.rewrite.take() {
            None => None,
            Some(r) => Some(self.rewrite(&format!("{at}.rewrite"), r, path_match)?),
        };
        if rewrite.is_some() && route.strip_prefix {
            return Err(self.error(
                format!("{at}.rewrite"),
                "`rewrite` and `strip_prefix` both change the path: give one",
            ));
        }
        let redirect = match route.redirect.take() {
            None => None,
            Some(r) => Some(self.redirect(&format!("{at}.redirect"), r, path_match)?),
        };
        let direct_response = match route.direct_response.take() {
            None => None,
            Some(d) => Some(self.direct_response(&format!("{at}.direct_response"), d)?),
        };
        let answers = redirect.is_some() || direct_response.is_some();
        if redirect.is_some() && direct_response.is_some() {
            return Err(self.error(
                format!("{at}.direct_response"),
                "a redirect has no body: give `redirect` or `direct_response`, not both",
            ));
        }
        if answers && (rewrite.is_some() || !backends.is_empty() || route.upstream.is_some()) {
            let what = if redirect.is_some() {
                "redirect"
            } else {
                "direct_response"
            };
            return Err(self.error(
                format!("{at}.{what}"),
                format!("a route with `{what}` answers itself: it takes no `upstream`, `backends` or `rewrite`"),
            ));
        }
        let request_headers = self.header_edits(
            &format!("{at}.request_headers"),
            route.request_headers.take(),
        )?;
        let response_headers = self.header_edits(
            &format!("{at}.response_headers"),
            route.response_headers.take(),
        )?;
        let rate_limit = match route.rate_limit.take() {
            None => None,
            Some(r) => Some(self.rate_limit(&format!("{at}.rate_limit"), r)?),
        };
        Ok(RouteRules {
            path_match,
            headers,
            query,
            backends,
            backend_hash,
            filters: Filters {
                request_headers,
                response_headers,
                rewrite,
                redirect,
                direct_response,
            },
            rate_limit,
        })
    }

    fn value_matches(
        &self,
        at: &str,
        items: Vec<FileValueMatch>,
        header: bool,
    ) -> Result<Vec<ValueMatch>> {
        let mut out = Vec::with_capacity(items.len());
        for (k, m) in items.into_iter().enumerate() {
            let at = format!("{at}[{k}]");
            let name = m.name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(self.error(format!("{at}.name"), format!("invalid name {:?}", m.name)));
            }
            let name = if header {
                name.to_ascii_lowercase()
            } else {
                name.to_owned()
            };
            let value = match (m.value, m.regex, m.present) {
                (Some(v), None, None) => ValueCondition::Exact(v),
                (None, Some(r), None) => {
                    check_regex(&r)
                        .map_err(|e| self.error(format!("{at}.regex"), e.to_string()))?;
                    ValueCondition::Regex(r)
                }
                (None, None, Some(true)) => ValueCondition::Present,
                (None, None, Some(false)) => {
                    return Err(self.error(
                        format!("{at}.present"),
                        "`present: false` is not supported: list the conditions that must hold",
                    ))
                }
                _ => {
                    return Err(self.error(
                        at,
                        "give exactly one of `value`, `regex` and `present: true`",
                    ))
                }
            };
            out.push(ValueMatch { name, value });
        }
        Ok(out)
    }

    fn backends(
        &self,
        at: &str,
        list: Vec<FileBackend>,
        has_upstream: bool,
        upstreams: &HashSet<&str>,
    ) -> Result<Vec<Backend>> {
        if has_upstream {
            return Err(self.error(
                format!("{at}.backends"),
                "`backends` replaces `upstream`: give one",
            ));
        }
        if list.is_empty() {
            return Err(self.error(format!("{at}.backends"), "at least one backend is required"));
        }
        let mut out: Vec<Backend> = Vec::with_capacity(list.len());
        for (k, b) in list.into_iter().enumerate() {
            let field = format!("{at}.backends[{k}].upstream");
            self.upstream_ref(&field, &b.upstream, upstreams)?;
            if out.iter().any(|o| o.upstream == b.upstream) {
                return Err(self.error(field, format!("upstream {:?} is listed twice", b.upstream)));
            }
            out.push(Backend {
                upstream: b.upstream,
                weight: b.weight.unwrap_or(1),
            });
        }
        if out.iter().map(|b| u64::from(b.weight)).sum::<u64>() == 0 {
            return Err(self.error(
                format!("{at}.backends"),
                "the weights sum to 0: no request could be sent anywhere",
            ));
        }
        Ok(out)
    }

    fn route_hash(&self, at: &str, h: FileHash) -> Result<HashKey> {
        let name = h.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
        use crate::config::file::FileHashKey as K;
        match (h.key, name) {
            (K::Header, Some(n)) => Ok(HashKey::Header(n.to_ascii_lowercase())),
            (K::Cookie, Some(n)) => Ok(HashKey::Cookie(n.to_owned())),
            (K::SourceIp, None) => Ok(HashKey::SourceIp),
            (K::Header | K::Cookie, None) => Err(self.error(
                format!("{at}.name"),
                "`key: header` and `key: cookie` need the `name`",
            )),
            (K::SourceIp, Some(_)) => Err(self.error(
                format!("{at}.name"),
                "`name` is only for `key: header` and `key: cookie`",
            )),
            (K::Path, _) => Err(self.error(
                format!("{at}.key"),
                "a route sticks by `header`, `cookie` or `source_ip`",
            )),
        }
    }

    fn rewrite(&self, at: &str, r: FileRewrite, path_match: PathMatch) -> Result<Rewrite> {
        match (r.prefix, r.path) {
            (Some(p), None) => {
                self.plain_path(&format!("{at}.prefix"), &p)?;
                if path_match != PathMatch::Prefix {
                    return Err(self.error(
                        format!("{at}.prefix"),
                        "a prefix rewrite needs `path_match: prefix`; use `path` for the whole path",
                    ));
                }
                Ok(Rewrite::Prefix(p))
            }
            (None, Some(p)) => {
                self.plain_path(&format!("{at}.path"), &p)?;
                Ok(Rewrite::Full(p))
            }
            _ => Err(self.error(at, "give exactly one of `prefix` and `path`")),
        }
    }

    fn redirect(&self, at: &str, r: FileRedirect, path_match: PathMatch) -> Result<Redirect> {
        let status = r.status.unwrap_or(302);
        if ![301, 302, 303, 307, 308].contains(&status) {
            return Err(self.error(
                format!("{at}.status"),
                format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
            ));
        }
        let scheme = match r.scheme.as_deref() {
            None => None,
            Some(s @ ("http" | "https")) => Some(s.to_owned()),
            Some(other) => {
                return Err(self.error(
                    format!("{at}.scheme"),
                    format!("scheme {other:?}: `http` or `https`"),
                ))
            }
        };
        if let Some(h) = &r.host {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
            {
                return Err(self.error(format!("{at}.host"), format!("invalid host {h:?}")));
            }
        }
        if r.port == Some(0) {
            return Err(self.error(format!("{at}.port"), "port 0"));
        }
        let path = match (r.path, r.prefix) {
            (None, None) => None,
            (Some(p), None) => {
                self.plain_path(&format!("{at}.path"), &p)?;
                Some(Rewrite::Full(p))
            }
            (None, Some(p)) => {
                self.plain_path(&format!("{at}.prefix"), &p)?;
                if path_match != PathMatch::Prefix {
                    return Err(self.error(
                        format!("{at}.prefix"),
                        "a prefix redirect needs `path_match: prefix`; use `path`",
                    ));
                }
                Some(Rewrite::Prefix(p))
            }
            (Some(_), Some(_)) => {
                return Err(self.error(format!("{at}.prefix"), "give `path` or `prefix`, not both"))
            }
        };
        if scheme.is_none() && r.host.is_none() && r.port.is_none() && path.is_none() {
            return Err(self.error(
                at,
                "a redirect changes at least one of `scheme`, `host`, `port`, `path` and `prefix`",
            ));
        }
        Ok(Redirect {
            scheme,
            host: r.host,
            port: r.port,
            path,
            status,
        })
    }

    fn direct_response(&self, at: &str, d: FileDirectResponse) -> Result<DirectResponse> {
        if !(200..=599).contains(&d.status) || (300..400).contains(&d.status) {
            return Err(self.error(
                format!("{at}.status"),
                format!(
                    "{} is not a direct response status (200–299 or 400–599; redirects use `redirect`)",
                    d.status
                ),
            ));
        }
        let body = d.body.unwrap_or_default();
        if body.len() > 64 * 1024 {
            return Err(self.error(format!("{at}.body"), "longer than 64 KiB"));
        }
        let content_type = d
            .content_type
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_owned());
        self.header_value(&format!("{at}.content_type"), &content_type)?;
        Ok(DirectResponse {
            status: d.status,
            body,
            content_type,
        })
    }

    fn header_edits(&self, at: &str, e: Option<FileHeaderEdits>) -> Result<HeaderEdits> {
        let Some(e) = e else {
            return Ok(HeaderEdits::default());
        };
        let pairs = |what: &str, map: BTreeMap<String, String>| -> Result<Vec<(String, String)>> {
            map.into_iter()
                .map(|(n, v)| {
                    let field = format!("{at}.{what}.{n}");
                    self.editable_name(&field, &n)?;
                    self.header_value(&field, &v)?;
                    Ok((n, v))
                })
                .collect()
        };
        let set = pairs("set", e.set)?;
        let add = pairs("add", e.add)?;
        let mut remove = Vec::with_capacity(e.remove.len());
        for (k, n) in e.remove.into_iter().enumerate() {
            self.editable_name(&format!("{at}.remove[{k}]"), &n)?;
            remove.push(n.to_ascii_lowercase());
        }
        Ok(HeaderEdits { set, add, remove })
    }

    /// A header name a route may edit: a token, not a framing or connection field.
    fn editable_name(&self, field: &str, name: &str) -> Result<()> {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(self.error(field, format!("invalid header name {name:?}")));
        }
        if FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            return Err(self.error(
                field,
                format!("{name} belongs to the connection and the framing; strait writes it"),
            ));
        }
        Ok(())
    }

    fn header_value(&self, field: &str, value: &str) -> Result<()> {
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(self.error(field, "a header value may not hold control characters"));
        }
        Ok(())
    }

    /// A path as written in a rewrite or redirect.
    fn plain_path(&self, field: &str, path: &str) -> Result<()> {
        if !path.starts_with('/')
            || path
                .bytes()
                .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
        {
            return Err(self.error(
                field,
                format!("path {path:?} must start with `/` and hold no `?`, `#` or whitespace"),
            ));
        }
        Ok(())
    }

    fn rate_limit(&self, at: &str, r: FileRateLimit) -> Result<RateLimit> {
        let rate = Rate::parse(&r.rate).map_err(|e| self.error(format!("{at}.rate"), e))?;
        let burst = match r.burst {
            Some(0) => {
                return Err(self.error(format!("{at}.burst"), "0 would refuse every request"))
            }
            Some(b) => b,
            // One second's worth, at least 1.
            None => (rate.tokens * 1_000_000_000 / rate.per.as_nanos().max(1) as u64).max(1),
        };
        let key = match (r.key, r.header) {
            (FileRateKey::ClientIp, None) => RateKey::ClientIp,
            (FileRateKey::Header, Some(h)) if !h.trim().is_empty() => {
                RateKey::Header(h.trim().to_ascii_lowercase())
            }
            (FileRateKey::Header, _) => {
                return Err(self.error(
                    format!("{at}.header"),
                    "`key: header` needs the `header` name",
                ))
            }
            (FileRateKey::ClientIp, Some(_)) => {
                return Err(self.error(format!("{at}.header"), "`header` goes with `key: header`"))
            }
        };
        Ok(RateLimit {
            tokens: rate.tokens,
            per: rate.per,
            burst,
            key,
        })
    }

    /// `http.request_id`.
    pub(super) fn request_id(&self, r: FileRequestId) -> Result<RequestIdConfig> {
        let header = r.header.unwrap_or_else(|| "X-Request-Id".to_owned());
        self.editable_name("http.request_id.header", &header)?;
        Ok(RequestIdConfig {
            enabled: r.enabled.unwrap_or(true),
            header,
        })
    }
}
