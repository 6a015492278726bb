//! One error type for the whole pipeline. Every layer adds what it was doing (which image, which
//! path, which rule), so a message in the journal can be acted on without a debugger.

use std::fmt;
use std::io;

#[derive(Debug)]
pub struct Error {
    context: String,
    source: Option<io::Error>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(context: impl Into<String>) -> Self {
        Error { context: context.into(), source: None }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {}", self.context, e),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {}

/// `.context("opening /usr")` on any fallible call.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error { context: what.into(), source: Some(e) })
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error { context: what(), source: Some(e) })
    }
}

impl<T> Context<T> for std::result::Result<T, rustix::io::Errno> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(io::Error::from).context(what)
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(io::Error::from).with_context(what)
    }
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error { context: format!("{}: {}", what.into(), e.context), source: e.source })
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error { context: format!("{}: {}", what(), e.context), source: e.source })
    }
}
