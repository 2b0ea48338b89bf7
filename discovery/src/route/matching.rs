//! What a compiled route compares a request with: its path (prefix, exact, or one of its
//! host's regular expressions, all run in one linear-time pass), header and query
//! parameter conditions (exact, regex, present).
//!
//! Regular expressions are `regex-automata` meta regexes, anchored at both ends and
//! compiled once per config; their search state lives in a [`Caches`] that each worker
//! owns, so a lookup shares nothing mutable across cores (the `regex` crate's own cache
//! pool would).

use regex_automata::meta::{self, Regex};
use regex_automata::{Anchored, Input, MatchKind, PatternSet};

use crate::spec::{ValueCondition, ValueMatch};

/// Largest compiled form of one route regex (or one host's set of path regexes).
const REGEX_SIZE_LIMIT: usize = 4 << 20;

/// How a route compares the request's path.
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// At a segment boundary.
    Prefix(Box<str>),
    Exact(Box<str>),
    /// Pattern number `index` of the host's path regex set.
    Regex {
        pattern: Box<str>,
        index: u32,
    },
}

impl PathMatcher {
    /// The route's path as configured and joined with its service's prefix.
    pub fn text(&self) -> &str {
        match self {
            PathMatcher::Prefix(p) | PathMatcher::Exact(p) => p,
            PathMatcher::Regex { pattern, .. } => pattern,
        }
    }
}

/// A header or query parameter condition.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Header names lower-case; query parameter names as sent.
    pub name: Box<str>,
    cond: Cond,
}

#[derive(Debug, Clone)]
enum Cond {
    Exact(Box<[u8]>),
    /// Index into [`Regexes`].
    Regex(u32),
    Present,
}

/// The value regexes of a router, with the index each [`Matcher`] refers to.
#[derive(Debug, Default)]
pub(super) struct Regexes(Vec<Regex>);

/// A regex that does not compile, or compiles too large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRegex {
    pub pattern: String,
    pub error: String,
}

impl std::fmt::Display for BadRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "regex {:?}: {}", self.pattern, self.error)
    }
}

/// Checks one route regex the way the router will compile it (for `strait check`).
pub fn check_regex(pattern: &str) -> Result<(), BadRegex> {
    build(&[pattern], MatchKind::LeftmostFirst).map(|_| ())
}

fn build(patterns: &[&str], kind: MatchKind) -> Result<Regex, BadRegex> {
    let anchored: Vec<String> = patterns.iter().map(|p| format!("^(?:{p})$")).collect();
    Regex::builder()
        .configure(
            meta::Config::new()
                .match_kind(kind)
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .onepass_size_limit(Some(REGEX_SIZE_LIMIT))
                .dfa_size_limit(Some(REGEX_SIZE_LIMIT)),
        )
        .build_many(&anchored)
        .map_err(|e| BadRegex {
            pattern: patterns.join(" | "),
            // The parser's own message says what and where (as `^(?:pattern)$`).
            error: match (e.syntax_error(), e.size_limit()) {
                (Some(syntax), _) => syntax.to_string(),
                (None, Some(limit)) => format!("compiles to more than {limit} bytes"),
                (None, None) => e.to_string(),
            },
        })
}

impl Regexes {
    pub(super) fn matcher(&mut self, m: &ValueMatch) -> Result<Matcher, BadRegex> {
        let cond = match &m.value {
            ValueCondition::Exact(v) => Cond::Exact(v.as_bytes().into()),
            ValueCondition::Present => Cond::Present,
            ValueCondition::Regex(p) => {
                self.0.push(build(&[p], MatchKind::LeftmostFirst)?);
                Cond::Regex((self.0.len() - 1) as u32)
            }
        };
        Ok(Matcher {
            name: m.name.as_str().into(),
            cond,
        })
    }
}

/// A host's path regexes as one set: one pass over the path tells which match.
#[derive(Debug)]
pub(super) struct PathSet(Regex);

impl PathSet {
    pub(super) fn new(patterns: &[&str]) -> Result<PathSet, BadRegex> {
        build(patterns, MatchKind::All).map(PathSet)
    }
}

/// One worker's search state for a router's regexes (from [`super::Router::caches`]).
#[derive(Debug)]
pub struct Caches {
    values: Vec<meta::Cache>,
    /// Per host group, for its [`PathSet`].
    paths: Vec<Option<meta::Cache>>,
    /// Which path patterns matched, for the group being looked up.
    matched: PatternSet,
}

impl Caches {
    pub(super) fn new(values: &Regexes, paths: &[Option<&PathSet>]) -> Caches {
        let most = paths
            .iter()
            .flatten()
            .map(|s| s.0.pattern_len())
            .max()
            .unwrap_or(0);
        Caches {
            values: values.0.iter().map(Regex::create_cache).collect(),
            paths: paths
                .iter()
                .map(|s| s.as_ref().map(|s| s.0.create_cache()))
                .collect(),
            matched: PatternSet::new(most),
        }
    }

    /// Runs group `group`'s path set over `path`; [`Caches::path_matched`] then answers.
    pub(super) fn run_paths(&mut self, set: &PathSet, group: usize, path: &str) {
        self.matched.clear();
        if let Some(Some(cache)) = self.paths.get_mut(group) {
            let input = Input::new(path).anchored(Anchored::Yes);
            set.0
                .which_overlapping_matches_with(cache, &input, &mut self.matched);
        }
    }

    pub(super) fn path_matched(&self, index: u32) -> bool {
        regex_automata::PatternID::new(index as usize)
            .is_ok_and(|id| self.matched.capacity() > id.as_usize() && self.matched.contains(id))
    }
}

impl Matcher {
    /// Whether `value` (`None`: absent) satisfies the condition.
    pub(super) fn accepts(
        &self,
        value: Option<&[u8]>,
        regexes: &Regexes,
        caches: &mut Caches,
    ) -> bool {
        let Some(value) = value else { return false };
        match &self.cond {
            Cond::Present => true,
            Cond::Exact(v) => **v == *value,
            Cond::Regex(i) => {
                let (Some(re), Some(cache)) = (
                    regexes.0.get(*i as usize),
                    caches.values.get_mut(*i as usize),
                ) else {
                    return false;
                };
                re.search_half_with(cache, &Input::new(value).earliest(true))
                    .is_some()
            }
        }
    }
}

/// The value of query parameter `name` in `query` (the part after `?`): the first
/// occurrence, as sent (not percent-decoded); `""` for a name without `=`.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_reports_every_pattern_matching_the_whole_path() {
        let set = PathSet::new(&["/a/[0-9]+", "/a/.*", "/b"]).unwrap();
        let mut c = Caches::new(&Regexes::default(), &[Some(&set)]);
        c.run_paths(&set, 0, "/a/12");
        assert!(c.path_matched(0) && c.path_matched(1) && !c.path_matched(2));
        c.run_paths(&set, 0, "/a/12x");
        assert!(!c.path_matched(0) && c.path_matched(1));
        c.run_paths(&set, 0, "/bb");
        assert!(!c.path_matched(2), "anchored at the end");
        c.run_paths(&set, 0, "x/b");
        assert!(!c.path_matched(2), "anchored at the start");
    }

    #[test]
    fn bad_and_huge_regexes_are_refused() {
        assert!(check_regex("/a(").is_err());
        assert!(check_regex("(a{1000}){1000}").is_err());
        assert!(check_regex("/v[0-9]+/.*").is_ok());
    }

    #[test]
    fn query_parameters_are_found_by_name() {
        assert_eq!(query_param("a=1&b=2&a=3", "a"), Some(&b"1"[..]));
        assert_eq!(query_param("a=1&flag", "flag"), Some(&b""[..]));
        assert_eq!(query_param("ab=1", "a"), None);
        assert_eq!(query_param("", "a"), None);
    }
}
