//! The one-line live status on stderr: events/s, epoch, watermark, windows open, late rows.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::job::{RunSummary, SourceRuntime};
use crate::query::QueryRunner;

/// Prints a status line at most once per interval (in place on a terminal).
#[derive(Debug)]
pub struct StatusLine {
    started: Instant,
    last: Instant,
    last_rows: u64,
    interval: Duration,
    terminal: bool,
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusLine {
    /// A status line on stderr: refreshed every second on a terminal, every 5 s otherwise.
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            last_rows: 0,
            interval: if terminal {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            },
            terminal,
        }
    }

    /// Refreshes the line if the interval has passed.
    pub fn tick(
        &mut self,
        epoch: u64,
        sources: &[SourceRuntime],
        queries: &[QueryRunner],
        summary: &RunSummary,
    ) {
        if self.last.elapsed() < self.interval {
            return;
        }
        self.print(epoch, sources, queries, summary, false);
    }

    /// Prints the final line.
    pub fn finish(
        &mut self,
        epoch: u64,
        sources: &[SourceRuntime],
        queries: &[QueryRunner],
        summary: &RunSummary,
    ) {
        self.print(epoch, sources, queries, summary, true);
    }

    fn print(
        &mut self,
        epoch: u64,
        sources: &[SourceRuntime],
        queries: &[QueryRunner],
        summary: &RunSummary,
        last: bool,
    ) {
        let now = Instant::now();
        let rows: u64 = sources.iter().map(|s| s.rows).sum();
        let (rate, label) = if last {
            (
                rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
                "avg",
            )
        } else {
            (
                (rows - self.last_rows) as f64 / (now - self.last).as_secs_f64().max(1e-9),
                "now",
            )
        };
        self.last = now;
        self.last_rows = rows;
        let watermark = sources
            .iter()
            .filter_map(SourceRuntime::watermark)
            .min()
            .map_or_else(|| "-".to_string(), format_watermark);
        let windows: usize = queries.iter().map(QueryRunner::open_windows).sum();
        let out: u64 = summary.rows_out.values().sum();
        let mut line = format!(
            "volley | epoch {epoch} | {rows} events ({:.0}/s {label}) | watermark {watermark} | windows open {windows} | late {} | rows out {out}",
            rate, summary.late_rows
        );
        let lags: Vec<u64> = sources.iter().filter_map(SourceRuntime::lag).collect();
        if !lags.is_empty() {
            line.push_str(&format!(" | lag {}", lags.iter().sum::<u64>()));
        }
        if summary.rejected_records > 0 {
            line.push_str(&format!(" | undecodable {}", summary.rejected_records));
        }
        for (name, stats) in &summary.models {
            line.push_str(&format!(
                " | {name} {} calls, {} rows/call, p99 {:.1} ms",
                stats.calls,
                stats.rows_per_call_p50,
                stats.latency_p99_seconds * 1e3
            ));
            if stats.timeouts > 0 {
                line.push_str(&format!(", {} timeouts", stats.timeouts));
            }
            if stats.memo_rows > 0 {
                line.push_str(&format!(", {} memo rows", stats.memo_rows));
            }
        }
        if summary.checkpoints > 0 {
            line.push_str(&format!(
                " | checkpoint {} ({} ms, {} KiB)",
                summary.last_checkpoint_epoch,
                summary.last_checkpoint_ms,
                summary.last_checkpoint_bytes.div_ceil(1024)
            ));
        }
        if summary.epochs_replayed > 0 || summary.rows_skipped > 0 {
            line.push_str(&format!(
                " | replayed {} epochs, {} rows already committed",
                summary.epochs_replayed, summary.rows_skipped
            ));
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal && !last {
            write!(err, "\r{line}\x1b[K")
        } else if self.terminal {
            writeln!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

fn format_watermark(nanos: i64) -> String {
    if nanos == i64::MAX {
        return "end of input".into();
    }
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}
