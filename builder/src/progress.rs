//! Progress reporting: a bar for the app build, a spinner per later step when
//! stderr is a terminal; one plain line per step otherwise (logs, CI).
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Chooses the style once, for the whole command.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    fancy: bool,
}

impl Progress {
    /// Bars and spinners if stderr is a terminal.
    pub fn detect() -> Progress {
        Progress {
            fancy: std::io::stderr().is_terminal(),
        }
    }

    /// Plain lines only.
    pub fn plain() -> Progress {
        Progress { fancy: false }
    }

    /// Whether bars are drawn (stderr is a terminal).
    pub fn is_fancy(&self) -> bool {
        self.fancy
    }

    /// A warning line between steps (no bar is drawn at that moment).
    pub fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    /// A step with a known number of units (the app's packages).
    pub fn bar(&self, label: &str, len: u64) -> Step {
        let pb = self.fancy.then(|| {
            let pb = ProgressBar::new(len.max(1)).with_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb.set_prefix(label.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Step::start(label, pb)
    }

    /// A step of unknown length.
    pub fn spinner(&self, label: &str) -> Step {
        let pb = self.fancy.then(|| {
            let pb = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner:.green} {prefix:.bold} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(label.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Step::start(label, pb)
    }
}

/// One step of the build.
pub struct Step {
    label: String,
    pb: Option<ProgressBar>,
    started: Instant,
}

impl Step {
    fn start(label: &str, pb: Option<ProgressBar>) -> Step {
        if pb.is_none() {
            eprintln!("{label}...");
        }
        Step {
            label: label.to_string(),
            pb,
            started: Instant::now(),
        }
    }

    /// Advance the bar by one unit; `what` (e.g. the crate just compiled) is shown beside it.
    pub fn advance(&self, what: &str) {
        if let Some(pb) = &self.pb {
            if pb.position() + 1 >= pb.length().unwrap_or(0) {
                pb.inc_length(1);
            }
            pb.inc(1);
            pb.set_message(what.to_string());
        }
    }

    /// Show `what` beside the spinner or bar.
    pub fn set_message(&self, what: &str) {
        if let Some(pb) = &self.pb {
            pb.set_message(what.to_string());
        }
    }

    /// A clone of the bar, for a thread forwarding output above it.
    pub fn bar_handle(&self) -> Option<ProgressBar> {
        self.pb.clone()
    }

    /// The step succeeded; `result` says what it produced.
    pub fn finish(self, result: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        match &self.pb {
            Some(pb) => {
                pb.set_style(
                    ProgressStyle::with_template("{prefix:.green.bold} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_prefix(format!("✓ {}", self.label));
                pb.finish_with_message(format!("{result} ({secs:.1}s)"));
            }
            None if !result.is_empty() => eprintln!("{}: {result} ({secs:.1}s)", self.label),
            None => {}
        }
    }
}

/// A step dropped before `finish` failed: stop its spinner where it stands.
impl Drop for Step {
    fn drop(&mut self) {
        if let Some(pb) = &self.pb {
            if !pb.is_finished() {
                pb.abandon_with_message("failed");
            }
        }
    }
}
