//! The library's progress reports on Python's `sys.stderr` (so notebooks show them too): a
//! one-line counter redrawn in place while a run goes, its notes as lines above it, or
//! nothing at all with `progress=False`.

use dgnam::io::Progress;
use pyo3::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Redraw the counter at most this often.
const REDRAW: Duration = Duration::from_millis(200);

pub struct PyProgress {
    enabled: bool,
    bar: Mutex<Bar>,
}

#[derive(Default)]
struct Bar {
    total: u64,
    done: u64,
    what: String,
    status: String,
    started: Option<Instant>,
    drawn: Option<Instant>,
    /// The length of the counter line on the screen (0: none).
    width: usize,
    /// The count the line on the screen shows.
    shown: u64,
}

impl PyProgress {
    pub fn new(enabled: bool) -> Self {
        PyProgress { enabled, bar: Mutex::new(Bar::default()) }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Bar) -> String) {
        if !self.enabled {
            return;
        }
        let text = match self.bar.lock() {
            Ok(mut bar) => f(&mut bar),
            Err(_) => return,
        };
        if !text.is_empty() {
            write_stderr(&text);
        }
    }
}

impl Bar {
    /// The counter line, replacing the one on the screen.
    fn draw(&mut self) -> String {
        let seconds = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let mut line = format!("{}/{} {}, {seconds:.1} s", self.done, self.total, self.what);
        if !self.status.is_empty() {
            line = format!("{line}, {}", self.status);
        }
        let pad = self.width.saturating_sub(line.chars().count());
        self.width = line.chars().count();
        self.drawn = Some(Instant::now());
        self.shown = self.done;
        format!("\r{line}{}", " ".repeat(pad))
    }

    /// Clears the counter line, so that a note can take its place.
    fn clear(&mut self) -> String {
        let text = if self.width > 0 { format!("\r{}\r", " ".repeat(self.width)) } else { String::new() };
        self.width = 0;
        text
    }
}

impl Progress for PyProgress {
    fn start(&self, total: u64, what: &str) {
        self.with_bar(|bar| {
            let clear = bar.clear();
            *bar = Bar { total, what: what.to_string(), started: Some(Instant::now()), ..Bar::default() };
            format!("{clear}{}", bar.draw())
        });
    }

    fn status(&self, what: &str) {
        self.with_bar(|bar| {
            bar.status = what.to_string();
            String::new()
        });
    }

    fn advance(&self, n: u64) {
        self.with_bar(|bar| {
            bar.done += n;
            let due = bar.drawn.is_none_or(|t| t.elapsed() >= REDRAW) || bar.done >= bar.total;
            if due && bar.started.is_some() {
                bar.draw()
            } else {
                String::new()
            }
        });
    }

    fn message(&self, line: &str) {
        self.with_bar(|bar| {
            let clear = bar.clear();
            let redraw = if bar.started.is_some() { bar.draw() } else { String::new() };
            format!("{clear}{line}\n{redraw}")
        });
    }

    fn finish(&self) {
        self.with_bar(|bar| {
            let text = match bar.started {
                Some(_) if bar.shown == bar.done && bar.width > 0 => "\n".to_string(),
                Some(_) => format!("{}\n", bar.draw()),
                None => String::new(),
            };
            *bar = Bar::default();
            text
        });
    }
}

/// Writes to `sys.stderr`, taking the GIL for it (the library reports from a thread that
/// released it). A stderr that cannot be written to is ignored, as a terminal's would be.
fn write_stderr(text: &str) {
    Python::attach(|py| {
        if let Ok(err) = py.import("sys").and_then(|sys| sys.getattr("stderr")) {
            let _ = err.call_method1("write", (text,));
            let _ = err.call_method0("flush");
        }
    });
}
