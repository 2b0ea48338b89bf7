//! serde over the YAML text, and its errors turned into a [`ConfigError`] with one field
//! path and one line (serde_norway's own location, or the path's line from [`Lines`]).
//!
//! Runs on: the thread that loads the config. Pure.

use super::Result;
use crate::config::file::FileConfig;
use crate::config::lines::Lines;
use crate::config::ConfigError;

/// Runs serde, turning its error into a [`ConfigError`] with one path and one line.
pub(super) fn deserialize(text: &str, lines: &Lines) -> Result<FileConfig> {
    // serde_norway places a duplicate key at the start of its mapping; yaml-rust2 knows better.
    if let Some((field, line)) = lines.duplicate() {
        let key = field.rsplit('.').next().unwrap_or(field);
        let first = lines
            .of(field)
            .map_or(String::new(), |l| format!(" (first at line {l})"));
        return Err(ConfigError {
            file: None,
            field: field.to_owned(),
            line: Some(line),
            message: format!("duplicate key `{key}`{first}"),
        });
    }
    // Syntax first: serde_norway hands the events before a syntax error to the struct, which
    // may then complain of a missing field instead of the real problem.
    if let Err(e) = serde_norway::from_str::<serde_norway::Value>(text) {
        return Err(yaml_error(String::new(), &e, lines));
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = match e.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        yaml_error(field, e.inner(), lines)
    })
}

/// A serde_norway error at `field` as a [`ConfigError`].
fn yaml_error(field: String, e: &serde_norway::Error, lines: &Lines) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    // The line goes into `line`, not into the message.
    if let Some(loc) = &location {
        let at = format!(" at line {} column {}", loc.line(), loc.column());
        message = message.replacen(&at, "", 1);
    }
    // serde_norway puts its own (sometimes shorter) path first; `field` has the full one.
    if let Some((head, rest)) = message.split_once(": ") {
        if !field.is_empty() && !head.contains(' ') && field.starts_with(head) {
            message = rest.to_owned();
        }
    }
    message = plain_types(&message);
    let line = location.map(|l| l.line()).or_else(|| lines.of(&field));
    ConfigError {
        file: None,
        field,
        line,
        message,
    }
}

/// Rust type names in serde's "expected …" replaced by what a YAML author writes.
fn plain_types(message: &str) -> String {
    let mut out = message
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected a boolean", "expected true or false");
    // "expected struct FileService" → "expected a mapping"
    if let Some(i) = out.find("expected struct ") {
        let name = &out[i + "expected struct ".len()..];
        let end = name
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(name.len());
        out.replace_range(i..i + "expected struct ".len() + end, "expected a mapping");
    }
    out
}
