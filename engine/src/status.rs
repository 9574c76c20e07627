//! The one-line live status on stderr: events/s, epoch, watermark, windows open, late rows.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::job::{RunSummary, SourceRuntime};
use volley_operators::QueryRunner;

/// Prints a status line at most once per interval (in place on a terminal).
#[derive(Debug)]
pub struct StatusLine {
    started: Instant,
    last: Instant,
    last_rows: u64,
    /// Rows read before this run (restored from a checkpoint): rates count only the rest.
    base_rows: u64,
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
            base_rows: 0,
            interval: if terminal {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            },
            terminal,
        }
    }

    /// Starts counting from here: the sources have read `rows` before this run (restored from
    /// a checkpoint), which the rates leave out.
    pub fn rebase(&mut self, rows: u64) {
        let now = Instant::now();
        self.started = now;
        self.last = now;
        self.last_rows = rows;
        self.base_rows = rows;
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

    /// The events read, with their rate since the last line (`now`) or over the whole run
    /// (`last`); a run that read nothing has no rate.
    fn events(&self, rows: u64, now: Instant, last: bool) -> String {
        let this_run = rows.saturating_sub(self.base_rows);
        let rate = if last {
            (this_run > 0).then(|| {
                let per_second = this_run as f64 / (now - self.started).as_secs_f64().max(1e-9);
                format!("{per_second:.0}/s avg")
            })
        } else {
            let per_second = rows.saturating_sub(self.last_rows) as f64
                / (now - self.last).as_secs_f64().max(1e-9);
            Some(format!("{per_second:.0}/s now"))
        };
        match (self.base_rows, rate) {
            (0, Some(rate)) => format!("{rows} events ({rate})"),
            (0, None) => format!("{rows} events"),
            (_, Some(rate)) => format!("{rows} events ({this_run} this run, {rate})"),
            (_, None) => format!("{rows} events (0 this run)"),
        }
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
        let events = self.events(rows, now, last);
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
            "volley | epoch {epoch} | {events} | watermark {watermark} | windows open {windows} | late {} | rows out {out}",
            summary.late_rows
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_only_the_rows_this_run_read() {
        let mut status = StatusLine::new();
        status.rebase(82_510_879);
        let later = status.started + Duration::from_secs(2);
        assert_eq!(
            status.events(82_510_879, later, true),
            "82510879 events (0 this run)"
        );
        assert_eq!(
            status.events(82_511_879, later, true),
            "82511879 events (1000 this run, 500/s avg)"
        );
        assert_eq!(
            status.events(82_510_879, later, false),
            "82510879 events (0 this run, 0/s now)"
        );
        let fresh = StatusLine::new();
        let later = fresh.started + Duration::from_secs(2);
        assert_eq!(fresh.events(0, later, true), "0 events");
        assert_eq!(fresh.events(1_000, later, true), "1000 events (500/s avg)");
    }
}
