//! Validation findings with file, line, column and field path, and their
//! rendering: `prod.toml:12:6: error: cluster "infra" > node "cp-2" > ip: ...`.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::locate::LineCol;
use super::path::FieldPath;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about an inventory file.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// `cluster "infra" > node "cp-2" > ip`
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn new(
        severity: Severity,
        file: PathBuf,
        at: Option<LineCol>,
        path: &FieldPath,
        message: String,
    ) -> Self {
        Self {
            severity,
            file,
            line: at.map(|a| a.line),
            column: at.map(|a| a.col),
            path: path.to_string(),
            message,
        }
    }

    /// True for errors (not warnings).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: {}: {}", self.path, self.message)
    }
}

/// Every finding of one load, errors and warnings; the `Err` of
/// [`super::load`] when any is an error.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.0.len() - self.errors()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        write!(f, "{} error(s), {} warning(s)", self.errors(), self.warnings())
    }
}

impl std::error::Error for Diagnostics {}
