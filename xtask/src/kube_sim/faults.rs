//! Fault injection (error statuses, 429 with Retry-After, delays, dropped
//! connections) and the request log tests assert on.

use std::time::Duration;

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status and a `Status` body (e.g. 500, 503).
    Status(u16),
    /// Answer 429 with `Retry-After` (seconds) in the header and the Status details.
    TooManyRequests { retry_after_secs: u32 },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
}

/// A fault for the next `times` requests matching `method` and `path_contains`.
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP method to match (`"PATCH"`), any when `None`.
    pub method: Option<String>,
    /// Substring of the request path to match, any when `None`.
    pub path_contains: Option<String>,
    pub kind: FaultKind,
    /// How many matching requests it affects.
    pub times: usize,
}

impl Fault {
    /// A fault on any request, `times` times.
    pub fn any(kind: FaultKind, times: usize) -> Self {
        Self {
            method: None,
            path_contains: None,
            kind,
            times,
        }
    }

    /// Restricts the fault to one HTTP method.
    pub fn on_method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Restricts the fault to paths containing `s`.
    pub fn on_path(mut self, s: &str) -> Self {
        self.path_contains = Some(s.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// Pending faults, consumed in insertion order.
#[derive(Default)]
pub struct Faults(Vec<Fault>);

impl Faults {
    pub fn push(&mut self, f: Fault) {
        if f.times > 0 {
            self.0.push(f);
        }
    }

    /// Takes one use of the first fault matching the request.
    pub fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let i = self.0.iter().position(|f| f.matches(method, path))?;
        let kind = self.0[i].kind.clone();
        self.0[i].times -= 1;
        if self.0[i].times == 0 {
            self.0.remove(i);
        }
        Some(kind)
    }
}

/// One request as the simulator saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    /// A write that changes state: POST/PUT/PATCH/DELETE without `dryRun`.
    pub mutating: bool,
    /// A write sent with `dryRun=All`.
    pub dry_run: bool,
    /// `watch=true` list.
    pub watch: bool,
    /// Response status; 0 when the connection was dropped.
    pub status: u16,
    /// The injected fault, if any.
    pub fault: Option<FaultKind>,
    /// Client certificate subject CN.
    pub user: String,
}
