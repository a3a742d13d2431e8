//! Problems found in a configuration file, and the [`Checker`] that
//! collects them with their key paths and lines.

use std::fmt;

use serde::de::DeserializeOwned;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `observers[0].actions[1].url`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s): {}", .problems.len(), render(.problems))]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects problems while walking the file.
pub(super) struct Checker<'a> {
    pub(super) source: &'a str,
    pub(super) doc: Option<toml_edit::Document<&'a str>>,
    pub(super) problems: Vec<Problem>,
}

/// A step of a key path.
#[derive(Clone, Copy)]
pub(super) enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

impl<'a> Checker<'a> {
    fn path_string(path: &[Step<'_>]) -> String {
        let mut out = String::new();
        for step in path {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // A bare key is written bare; any other quoted (the
                    // empty key too, which would leave the path empty).
                    if !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        out.push_str(k);
                    } else {
                        out.push_str(&format!("{k:?}"));
                    }
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// The line of the item at `path`, from the spans of the parsed
    /// document: the deepest key or table of the path that exists.
    fn line_of(&self, path: &[Step<'_>]) -> Option<usize> {
        use toml_edit::{Item, Value};
        #[derive(Clone, Copy)]
        enum Node<'n> {
            Item(&'n Item),
            Table(&'n toml_edit::Table),
            Value(&'n Value),
        }
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best = None;
        for step in path {
            let next = match (step, node) {
                (Step::Key(k), Node::Table(t)) | (Step::Key(k), Node::Item(Item::Table(t))) => {
                    t.get_key_value(k).map(|(key, it)| {
                        best = key.span().or(best.clone());
                        Node::Item(it)
                    })
                }
                (Step::Key(k), Node::Item(Item::Value(Value::InlineTable(t))))
                | (Step::Key(k), Node::Value(Value::InlineTable(t))) => {
                    t.get_key_value(k).map(|(key, v)| {
                        best = key.span().or(best.clone());
                        Node::Item(v)
                    })
                }
                (Step::Index(i), Node::Item(Item::ArrayOfTables(a))) => a.get(*i).map(|t| {
                    best = t.span().or(best.clone());
                    Node::Table(t)
                }),
                (Step::Index(i), Node::Item(Item::Value(Value::Array(a))))
                | (Step::Index(i), Node::Value(Value::Array(a))) => a.get(*i).map(|v| {
                    best = v.span().or(best.clone());
                    Node::Value(v)
                }),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best.map(|span| line_at(self.source, span.start))
    }

    pub(super) fn problem(&mut self, path: &[Step<'_>], message: impl Into<String>) {
        let line = self.line_of(path);
        self.problems.push(Problem {
            path: Self::path_string(path),
            line,
            message: message.into(),
        });
    }

    /// Deserializes `value` as `T`, recording every problem on failure,
    /// each at its own key when one key is at fault.
    ///
    /// serde stops at the first bad field and its message does not always
    /// name it ("invalid type: string, expected usize"). So for a table the
    /// key at fault is found by leaving keys out: the one whose absence makes
    /// the message change. It is recorded, left out, and the rest is tried
    /// again, so that one mistake does not hide the next; when the rest is
    /// good it is returned, for the caller's own checks.
    pub(super) fn parse<T: DeserializeOwned>(
        &mut self,
        path: &[Step<'_>],
        value: toml::Value,
    ) -> Option<T> {
        let mut message = match T::deserialize(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e.message().to_string(),
        };
        let toml::Value::Table(mut table) = value else {
            self.problem(path, message);
            return None;
        };
        let mut left_out: Vec<String> = Vec::new();
        loop {
            if left_out
                .iter()
                .any(|k| message == format!("missing field `{k}`"))
            {
                // Only what was left out is missing now: nothing more to find.
                return None;
            }
            let Some(key) =
                unknown_field(&message, &table).or_else(|| at_fault::<T>(&table, &message))
            else {
                self.problem(path, message);
                return None;
            };
            let mut full: Vec<Step<'_>> = path.to_vec();
            full.push(Step::Key(&key));
            let line = self.line_of(&full);
            self.problems.push(Problem {
                path: Self::path_string(&full),
                line,
                message,
            });
            table.remove(&key);
            left_out.push(key);
            message = match T::deserialize(toml::Value::Table(table.clone())) {
                // The rest is good: the caller checks it too (its problems
                // are recorded, so the configuration is refused all the same).
                Ok(rest) => return Some(rest),
                Err(e) => e.message().to_string(),
            };
        }
    }
}

/// The key of `table` that `message` (the error of deserializing it as `T`)
/// is about: the one whose absence changes the message. A key whose absence
/// only makes it missing counts when no other key does (a required key that
/// is mistyped), except `type`, the tag that every action needs first.
fn at_fault<T: DeserializeOwned>(table: &toml::Table, message: &str) -> Option<String> {
    let mut fallback = None;
    for key in table.keys() {
        let mut without = table.clone();
        without.remove(key);
        match T::deserialize(toml::Value::Table(without)) {
            Ok(_) => return Some(key.clone()),
            Err(e) => {
                let m = e.message();
                if m == format!("missing field `{key}`") {
                    if fallback.is_none() && key != "type" {
                        fallback = Some(key.clone());
                    }
                } else if m != message {
                    return Some(key.clone());
                }
            }
        }
    }
    fallback
}

/// The key of `table` that serde names in an "unknown field `x`, expected
/// ..." message. Matched against the table's keys rather than cut at the
/// next backtick: a key may hold backticks (`"a`b" = 1`), and a name cut
/// short is no key of the table, so leaving it out changed nothing and the
/// same problem was recorded again, forever.
fn unknown_field(message: &str, table: &toml::Table) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    table
        .keys()
        .filter(|k| {
            rest.strip_prefix(k.as_str())
                .is_some_and(|after| after == "`" || after.starts_with("`, "))
        })
        .max_by_key(|k| k.len())
        .cloned()
}

pub(super) fn line_at(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
