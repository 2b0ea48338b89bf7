//! Field path → line number, so that a semantic error can say where it is.
//!
//! serde_norway (a maintained fork of serde_yaml 0.9) keeps no spans, so the text is parsed a second time with yaml-rust2's
//! marked event parser, recording the line of every mapping key and sequence item under a
//! path written like the checker's (`services[0].routes[1].upstream`).
//!
//! Runs on: the thread that loads the config. Pure: text in, a map out; a text yaml-rust2
//! cannot parse yields the lines it saw before the error (serde reports that error itself).

use std::collections::HashMap;

use yaml_rust2::parser::{MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::Event;

/// Lines of the keys and items of one YAML document.
#[derive(Debug, Default)]
pub(super) struct Lines {
    /// Path → 1-based line of the key (for a mapping entry) or of the item's first token.
    lines: HashMap<String, usize>,
    /// The first key that appears twice in one mapping: its path and the second line.
    duplicate: Option<(String, usize)>,
}

impl Lines {
    /// Records the first document of `text`.
    pub(super) fn parse(text: &str) -> Lines {
        let mut recorder = Recorder::default();
        // An error ends the recording; what was seen before it stays usable.
        let _ = Parser::new_from_str(text).load(&mut recorder, false);
        Lines {
            lines: recorder.lines,
            duplicate: recorder.duplicate,
        }
    }

    /// The first key given twice in one mapping, with the line of its second occurrence.
    pub(super) fn duplicate(&self) -> Option<(&str, usize)> {
        self.duplicate
            .as_ref()
            .map(|(path, line)| (path.as_str(), *line))
    }

    /// The line of `path`, else of its nearest parent that has one.
    pub(super) fn of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = parent(path)?;
        }
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `` → none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    })
}

/// Where the parser is inside a collection.
#[derive(Debug)]
enum Frame {
    /// In a mapping at `path`; `key` is the key whose value comes next, `None` while a key
    /// is expected.
    Map { path: String, key: Option<String> },
    /// In a sequence at `path`; `next` is the index of the next item.
    Seq { path: String, next: usize },
}

/// The event receiver: a stack of open collections plus the lines found so far.
#[derive(Debug, Default)]
struct Recorder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    duplicate: Option<(String, usize)>,
    /// Set once the first document has ended; later events are ignored.
    done: bool,
}

impl Recorder {
    /// The path of the node that starts with this event, or `None` when the event is a
    /// mapping key (recorded here) or is not inside any collection.
    fn node_path(&mut self, ev: &Event, line: usize) -> Option<String> {
        match self.stack.last_mut()? {
            Frame::Map { path, key } => match key.take() {
                Some(key) => Some(key),
                None => {
                    let Event::Scalar(name, ..) = ev else {
                        // A non-scalar key: no config key looks like this; give it a path
                        // nothing will ask for.
                        *key = Some("?".to_owned());
                        return None;
                    };
                    let full = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    if self.lines.contains_key(&full) {
                        self.duplicate.get_or_insert((full.clone(), line));
                    } else {
                        self.lines.insert(full.clone(), line);
                    }
                    *key = Some(full);
                    None
                }
            },
            Frame::Seq { path, next } => {
                let full = format!("{path}[{next}]");
                *next += 1;
                self.lines.entry(full.clone()).or_insert(line);
                Some(full)
            }
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentEnd => self.done = true,
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = if self.stack.is_empty() {
                    Some(String::new())
                } else {
                    self.node_path(&ev, line)
                };
                // A collection used as a key gets a path nothing asks for.
                let path = path.unwrap_or_else(|| "?".to_owned());
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Map { path, key: None },
                    _ => Frame::Seq { path, next: 0 },
                });
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.node_path(&ev, line);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment
workers: 2
listeners:
  - name: http
    address: 127.0.0.1:9080

services:
  - name: a
    hosts: [a.example.com, b.example.com]
    routes:
      - name: r
        path: /x
        upstream: u
";

    #[test]
    fn keys_and_items_get_their_lines() {
        let lines = Lines::parse(TEXT);
        assert_eq!(lines.of("workers"), Some(2));
        assert_eq!(lines.of("listeners"), Some(3));
        assert_eq!(lines.of("listeners[0]"), Some(4));
        assert_eq!(lines.of("listeners[0].address"), Some(5));
        assert_eq!(lines.of("services[0].hosts[1]"), Some(9));
        assert_eq!(lines.of("services[0].routes[0].name"), Some(11));
        assert_eq!(lines.of("services[0].routes[0].upstream"), Some(13));
    }

    #[test]
    fn a_missing_path_falls_back_to_its_nearest_parent() {
        let lines = Lines::parse(TEXT);
        assert_eq!(lines.of("services[0].routes[0].methods[3]"), Some(11));
        assert_eq!(lines.of("services[0].upstream"), Some(8));
        assert_eq!(lines.of("upstreams[0].name"), None);
    }

    #[test]
    fn a_key_given_twice_is_found_at_its_second_line() {
        let lines = Lines::parse("a:\n  b: 1\n  c: 2\n  b: 3\nd: [{e: 1}, {e: 2}]\n");
        assert_eq!(lines.duplicate(), Some(("a.b", 4)));
        assert_eq!(lines.of("a.b"), Some(2));
        assert_eq!(Lines::parse(TEXT).duplicate(), None);
    }

    #[test]
    fn a_broken_document_keeps_the_lines_before_the_error() {
        let lines = Lines::parse("workers: 2\nlisteners: [\n");
        assert_eq!(lines.of("workers"), Some(1));
    }
}
