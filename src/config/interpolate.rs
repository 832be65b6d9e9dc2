//! `${NAME}`, `${NAME:-default}` and `${file:PATH}` in config strings.
//!
//! Interpolation runs while each string is deserialized, so an error (an unset variable, an
//! unreadable file) is reported at the string's line and column.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

thread_local! {
    static BASE_DIR: RefCell<PathBuf> = RefCell::new(PathBuf::from("."));
}

/// Runs `f` with `${file:…}` paths resolved against `dir` (the config file's folder).
pub fn with_base_dir<R>(dir: &Path, f: impl FnOnce() -> R) -> R {
    let previous = BASE_DIR.with(|b| b.replace(dir.to_path_buf()));
    let result = f();
    BASE_DIR.with(|b| *b.borrow_mut() = previous);
    result
}

/// Resolves a config-relative path.
pub fn resolve_path(path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        BASE_DIR.with(|b| b.borrow().join(p))
    }
}

pub fn interpolate(input: &str) -> Result<String, String> {
    if !input.contains("${") {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in {input:?}"))?;
        out.push_str(&expand(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(expr: &str) -> Result<String, String> {
    if let Some(path) = expr.strip_prefix("file:") {
        let full = resolve_path(path);
        let text = std::fs::read_to_string(&full)
            .map_err(|e| format!("cannot read secret file {}: {e}", full.display()))?;
        return Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned());
    }
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`${{{expr}}}` is not a valid variable reference"));
    }
    match (std::env::var(name), default) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(default)) => Ok(default.to_owned()),
        (Err(_), None) => Err(format!(
            "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(interpolate("a${KEYWAY_TEST_UNSET_X:-d}b").unwrap(), "adb");
        assert_eq!(interpolate("plain").unwrap(), "plain");
        let err = interpolate("${KEYWAY_TEST_UNSET_X}").unwrap_err();
        assert!(err.contains("KEYWAY_TEST_UNSET_X"), "{err}");
        assert!(interpolate("${oops").is_err());
        assert!(interpolate("${a b}").is_err());
    }

    #[test]
    fn file_reference_trims_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "sekrit\n").unwrap();
        let got = with_base_dir(dir.path(), || interpolate("Bearer ${file:s.txt}")).unwrap();
        assert_eq!(got, "Bearer sekrit");
    }
}
