//! Progress of a run as events, shown three ways: indicatif bars on a terminal
//! (a header per phase, a spinner per node with its current step that ends as
//! a permanent `✓`/`✗` line with its duration), plain lines when stderr is not
//! a terminal, or one JSON object per line (`--output json`). Every event also
//! goes to tracing at debug level.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase begins, with the number of actions its plan holds and the
    /// plan itself (what `plan --output json` printed for it).
    PhaseStarted {
        phase: String,
        title: String,
        actions: usize,
        plan: Vec<super::Action>,
    },
    /// A node (or `cluster`) is at a step.
    Step {
        phase: String,
        target: String,
        step: String,
    },
    /// A node finished its work in the phase.
    TargetDone { phase: String, target: String },
    /// A node failed; the phase goes on with the others.
    TargetFailed {
        phase: String,
        target: String,
        error: String,
    },
    /// A phase ended.
    PhaseFinished { phase: String, ok: bool, seconds: f64 },
    /// Nothing to do in this phase: observed state matches.
    PhaseConverged { phase: String, title: String },
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// indicatif bars (stderr is a terminal).
    Bars,
    /// One plain line per event.
    Plain,
    /// One JSON object per line on stdout.
    Json,
    /// Nothing but tracing (tests, `-q`).
    Silent,
}

impl Style {
    /// Bars on a terminal, plain lines otherwise; JSON when asked.
    pub fn detect(json: bool, quiet: bool) -> Self {
        match (json, quiet) {
            (true, _) => Self::Json,
            (false, true) => Self::Silent,
            _ if std::io::stderr().is_terminal() => Self::Bars,
            _ => Self::Plain,
        }
    }
}

/// The process's one set of spinners: every [`Reporter`] draws into it, and
/// log lines are written through it ([`crate::logging`]), so a warning printed
/// while spinners run never leaves a frozen copy of them on screen.
pub fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(MultiProgress::new)
}

/// A target's spinner while it works.
struct Line {
    bar: ProgressBar,
    started: Instant,
    step: String,
}

/// Receives events from concurrent tasks and renders them.
pub struct Reporter {
    style: Style,
    multi: MultiProgress,
    bars: Mutex<HashMap<(String, String), Line>>,
    timings: Mutex<Vec<(String, Duration, bool)>>,
    started: Mutex<HashMap<String, Instant>>,
}

impl Reporter {
    /// A reporter of the given style.
    pub fn new(style: Style) -> Self {
        Self {
            style,
            multi: multi().clone(),
            bars: Mutex::new(HashMap::new()),
            timings: Mutex::new(Vec::new()),
            started: Mutex::new(HashMap::new()),
        }
    }

    /// How events are shown.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Records and shows one event.
    pub fn emit(&self, e: Event) {
        tracing::debug!(event = ?e, "progress");
        match &e {
            Event::PhaseStarted { phase, .. } => {
                self.started.lock().unwrap().insert(phase.clone(), Instant::now());
            }
            Event::PhaseFinished { phase, ok, seconds } => {
                self.timings
                    .lock()
                    .unwrap()
                    .push((phase.clone(), Duration::from_secs_f64(*seconds), *ok));
            }
            Event::PhaseConverged { phase, .. } => {
                self.timings.lock().unwrap().push((phase.clone(), Duration::ZERO, true));
            }
            _ => {}
        }
        match self.style {
            Style::Silent => {}
            Style::Json => println!("{}", serde_json::to_string(&e).expect("events serialize")),
            Style::Plain => eprintln!("{}", plain(&e)),
            Style::Bars => self.bars(&e),
        }
    }

    /// Seconds since `phase` started (0 when it did not).
    pub fn elapsed(&self, phase: &str) -> f64 {
        self.started
            .lock()
            .unwrap()
            .get(phase)
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// The closing summary: one line per phase with its time.
    pub fn summary(&self) -> String {
        let timings = self.timings.lock().unwrap();
        let total: Duration = timings.iter().map(|t| t.1).sum();
        let mut out = String::from("phase timings:\n");
        for (phase, d, ok) in timings.iter() {
            let status = if !ok {
                "failed"
            } else if d.is_zero() {
                "nothing to do"
            } else {
                "ok"
            };
            out.push_str(&format!("  {phase:<14} {:>8.2}s  {status}\n", d.as_secs_f64()));
        }
        out.push_str(&format!("  {:<14} {:>8.2}s", "total", total.as_secs_f64()));
        out
    }

    /// Ends every spinner still running (a plan's probes, a phase's
    /// cluster-wide waits) as a permanent line, so nothing is left spinning
    /// or frozen before the caller prints below it.
    pub fn finish(&self, ok: bool) {
        if self.style == Style::Bars {
            let mut bars = self.bars.lock().unwrap();
            for (_, line) in bars.drain() {
                self.close(line, ok, None, true);
            }
        }
    }

    /// Turns a spinner into a permanent `✓`/`✗` line with its duration. The
    /// line is printed above the spinners still running, in the order things
    /// finish, and is never redrawn.
    fn close(&self, line: Line, ok: bool, error: Option<&str>, closed_by_phase: bool) {
        let mark = if ok { '✓' } else { '✗' };
        // A target's own end says "done"; a line a phase end closes keeps its last step.
        let what = match (error, closed_by_phase) {
            (Some(e), _) => e,
            (None, false) if ok => "done",
            (None, _) => &line.step,
        };
        line.bar.finish_and_clear();
        self.multi.remove(&line.bar);
        let _ = self.multi.println(format!(
            "{mark} {:>12} {what} ({:.1}s)",
            line.bar.prefix(),
            line.started.elapsed().as_secs_f64()
        ));
    }

    fn bars(&self, e: &Event) {
        let style = ProgressStyle::with_template("{spinner} {prefix:>12} {wide_msg}").expect("valid template");
        let mut bars = self.bars.lock().unwrap();
        match e {
            Event::PhaseStarted { title, actions, .. } => {
                let _ = self.multi.println(format!("== {title} ({actions} action(s))"));
            }
            Event::PhaseConverged { phase, title } => {
                self.close_phase(&mut bars, phase, true);
                let _ = self.multi.println(format!("== {title}: nothing to do"));
            }
            Event::Step { phase, target, step } => {
                let line = bars.entry((phase.clone(), target.clone())).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(target.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    Line {
                        bar,
                        started: Instant::now(),
                        step: String::new(),
                    }
                });
                line.step.clone_from(step);
                line.bar.set_message(step.clone());
            }
            Event::TargetDone { phase, target } => {
                if let Some(line) = bars.remove(&(phase.clone(), target.clone())) {
                    self.close(line, true, None, false);
                }
            }
            Event::TargetFailed { phase, target, error } => match bars.remove(&(phase.clone(), target.clone())) {
                Some(line) => self.close(line, false, Some(error), false),
                None => {
                    let _ = self.multi.println(format!("✗ {target:>12} {error}"));
                }
            },
            Event::PhaseFinished { phase, ok, .. } => self.close_phase(&mut bars, phase, *ok),
        }
    }

    /// Ends the spinners of `phase` that no target event ended (cluster-wide steps).
    fn close_phase(&self, bars: &mut HashMap<(String, String), Line>, phase: &str, ok: bool) {
        let keys: Vec<(String, String)> = bars.keys().filter(|(p, _)| p == phase).cloned().collect();
        for key in keys {
            if let Some(line) = bars.remove(&key) {
                self.close(line, ok, None, true);
            }
        }
    }
}

fn plain(e: &Event) -> String {
    match e {
        Event::PhaseStarted { title, actions, .. } => format!("== {title} ({actions} action(s))"),
        Event::PhaseConverged { title, .. } => format!("== {title}: nothing to do"),
        Event::Step { target, step, .. } => format!("{target}: {step}"),
        Event::TargetDone { target, .. } => format!("{target}: done"),
        Event::TargetFailed { target, error, .. } => format!("{target}: FAILED: {error}"),
        Event::PhaseFinished { phase, ok, seconds } => {
            format!(
                "== {phase} {} in {seconds:.2}s",
                if *ok { "finished" } else { "FAILED" }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_tagged_json_and_timings_add_up() {
        let r = Reporter::new(Style::Silent);
        let e = Event::Step {
            phase: "nodes".into(),
            target: "cp-1".into(),
            step: "apply config".into(),
        };
        let j: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "step");
        assert_eq!(j["target"], "cp-1");
        r.emit(Event::PhaseFinished {
            phase: "nodes".into(),
            ok: true,
            seconds: 1.5,
        });
        r.emit(Event::PhaseConverged {
            phase: "crds".into(),
            title: "Phase 1: CRDs".into(),
        });
        let s = r.summary();
        assert!(
            s.contains("nodes") && s.contains("1.50s") && s.contains("nothing to do"),
            "{s}"
        );
        assert!(s.trim_end().ends_with("1.50s"), "{s}");
    }
}
