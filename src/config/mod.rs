//! Configuration as written: the YAML file (`file`), interpolation, durations and secrets, and
//! the errors and warnings that point into the file. Turning it into the pipeline's `Runtime` is
//! the pipeline's own job (`pipeline::compile`): this layer knows nothing of the stages.

pub mod file;
pub mod interpolate;
pub mod types;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use self::file::DetailLevel;
use self::file::FileConfig;

/// A config error with its place in the file.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigError {
    pub message: String,
    /// Dotted path of the offending key, e.g. `routes[2].upstream`.
    pub path: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A pitfall that does not stop keyway from starting: a stable code, the place in the file
/// (line 0 when it concerns no one place), and how to fix it.
#[derive(Clone, Debug, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
    /// Dotted path of the key it concerns, e.g. `routes[2]`.
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub fix: String,
}

impl Warning {
    pub fn at(
        &mut self,
        at: Option<&serde_saphyr::Location>,
        path: impl Into<String>,
    ) -> &mut Self {
        let (line, column) = at.map_or((0, 0), |l| (l.line() as u32, l.column() as u32));
        self.line = line;
        self.column = column;
        self.path = path.into();
        self
    }

    pub fn fix(&mut self, fix: impl Into<String>) -> &mut Self {
        self.fix = fix.into();
        self
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        write!(f, "warning[{}]: {}", self.code, self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Where a config came from, so a reload can read it again.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    Embedded {
        text: &'static str,
        base_dir: PathBuf,
    },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Embedded { .. } => "(embedded demo config)".to_owned(),
        }
    }
}

/// YAML → `FileConfig`, with unknown keys reported at their line and the nearest valid key.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    let options = serde_saphyr::options! {};
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let (line, column) = err
            .location()
            .map_or((0, 0), |l| (l.line() as u32, l.column() as u32));
        let mut message = err.without_snippet().to_string();
        // The location is reported in its own fields.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        message = humanize(message);
        if let Some(suggestion) = nearest_key(&message) {
            message.push_str(&format!(" (did you mean `{suggestion}`?)"));
        }
        ConfigError {
            message,
            path: String::new(),
            line,
            column,
        }
    })
}

/// Rewrites parser messages that name library internals into what a config author needs.
fn humanize(message: String) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key") {
        let key = rest
            .strip_prefix(": ")
            .and_then(|r| r.split(", set DuplicateKeyPolicy").next())
            .unwrap_or("");
        return format!(
            "duplicate key `{key}`: a key may appear only once in a mapping (keyway does not pick one of the two)"
        );
    }
    if message.contains("untagged enum Workers") {
        return "workers must be a number of threads (at least 1) or auto".to_owned();
    }
    if message.contains("untagged enum OneOrMany") {
        return "expected a single value or a list of values".to_owned();
    }
    if message == "invalid boolean" {
        return "invalid boolean: expected true or false".to_owned();
    }
    message
}

/// From "unknown field `x`, expected one of a, b" (serde-saphyr) or "… one of `a`, `b`" (serde),
/// and the same for enum variants, the closest expected name.
fn nearest_key(message: &str) -> Option<String> {
    let rest = message
        .split("unknown field `")
        .nth(1)
        .or_else(|| message.split("unknown variant `").nth(1))?;
    let (unknown, expected) = rest.split_once('`')?;
    let expected = expected.split_once("expected ")?.1;
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    expected
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|candidate| candidate.trim().trim_matches('`'))
        .filter(|candidate| !candidate.is_empty())
        .map(|candidate| (strsim::jaro_winkler(unknown, candidate), candidate))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}
