//! Values that must never reach a log line, an error, a trace or a metric.

use std::fmt;

/// A secret value whose `Debug` and `Display` print `<redacted>`.
/// Reading the value needs an explicit `expose()`, so every use is visible in review.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The same secret, borrowed: `Secret<String>` or `Secret<Cow<str>>` as `Secret<&str>`.
    pub fn as_deref(&self) -> Secret<&T::Target>
    where
        T: std::ops::Deref,
    {
        Secret(&*self.0)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
