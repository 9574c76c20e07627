//! What each source sent to dead letters, and the verdict on it: a run, batch or verify in
//! which a source's dead letters pass its `max_dead_letters` fails, naming the source, the
//! count and the first reasons.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use volley_sql::DeadLetterLimit;

use crate::error::{EngineError, Result};

/// How many reasons a source keeps for the verdict's message.
const REASONS_KEPT: usize = 3;

/// One source's dead letters so far (carried across restarts by checkpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLetters {
    /// Records read: rows, and records that could not become rows.
    pub records: u64,
    /// Records that could not become rows (undecodable, or not fitting the columns).
    pub undecodable: u64,
    /// Rows sent to dead letters as late, by the INSERT that found them late (a row late for
    /// two INSERTs is one row of the source).
    pub late: BTreeMap<String, u64>,
    /// The first reasons, as written in the dead letters.
    pub reasons: Vec<String>,
}

impl SourceLetters {
    /// Records of this source that went to dead letters.
    pub fn letters(&self) -> u64 {
        self.undecodable + self.late_rows()
    }

    /// Rows found late (the most any one INSERT found).
    pub fn late_rows(&self) -> u64 {
        self.late.values().copied().max().unwrap_or(0)
    }

    /// Records `undecodable` of them, with the first reasons.
    pub fn read(&mut self, rows: u64, undecodable: impl IntoIterator<Item = String>) {
        self.records += rows;
        for reason in undecodable {
            self.records += 1;
            self.undecodable += 1;
            self.note(reason);
        }
    }

    /// Records `rows` rows found late by `insert`.
    pub fn found_late(&mut self, insert: &str, rows: u64, reason: &str) {
        if rows == 0 {
            return;
        }
        *self.late.entry(insert.to_string()).or_default() += rows;
        self.note(reason.to_string());
    }

    fn note(&mut self, reason: String) {
        if self.reasons.len() < REASONS_KEPT && !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }
}

/// The sources whose dead letters passed their limit, as one message per source.
pub fn over_limit(
    limits: &BTreeMap<String, DeadLetterLimit>,
    sources: &BTreeMap<String, SourceLetters>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, letters) in sources {
        let limit = limits
            .get(name)
            .copied()
            .unwrap_or(DeadLetterLimit::DEFAULT);
        if !limit.exceeded(letters.letters(), letters.records) {
            continue;
        }
        let share = 100.0 * letters.letters() as f64 / letters.records.max(1) as f64;
        let mut parts = Vec::new();
        if letters.undecodable > 0 {
            parts.push(format!("{} undecodable", letters.undecodable));
        }
        if letters.late_rows() > 0 {
            parts.push(format!(
                "{} late (behind the watermark, their window already written)",
                letters.late_rows()
            ));
        }
        out.push(format!(
            "source '{name}' sent {} of its {} records ({share:.1}%) to dead letters, more than its max_dead_letters {limit}: {}. First reasons: {}",
            letters.letters(),
            letters.records,
            parts.join(", "),
            letters.reasons.join(" | ")
        ));
    }
    out
}

/// Fails when a source's dead letters passed its limit (see [`over_limit`]).
///
/// # Errors
/// [`EngineError::DeadLetters`] naming every such source.
pub fn check(
    limits: &BTreeMap<String, DeadLetterLimit>,
    sources: &BTreeMap<String, SourceLetters>,
) -> Result<()> {
    let over = over_limit(limits, sources);
    if over.is_empty() {
        return Ok(());
    }
    Err(EngineError::DeadLetters(format!(
        "{}. What was written stays in the sinks, but the run is not a success: fix the input, or raise the table's 'max_dead_letters' option",
        over.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_source_past_its_limit_is_named_with_its_counts_and_reasons() {
        let mut payments = SourceLetters::default();
        payments.read(90, ["line 3 of p.csv: not a number".to_string()]);
        payments.found_late("INSERT INTO a", 20, "late: window x");
        payments.found_late("INSERT INTO b", 5, "late: window x");
        assert_eq!(payments.records, 91);
        assert_eq!(payments.letters(), 21);
        let mut quiet = SourceLetters::default();
        quiet.read(100, []);
        let sources = BTreeMap::from([
            ("payments".to_string(), payments),
            ("quiet".to_string(), quiet),
        ]);
        let err = check(&BTreeMap::new(), &sources).unwrap_err().to_string();
        assert!(
            err.contains("source 'payments' sent 21 of its 91 records"),
            "{err}"
        );
        assert!(
            err.contains("1 undecodable") && err.contains("20 late"),
            "{err}"
        );
        assert!(
            err.contains("not a number") && err.contains("window x"),
            "{err}"
        );
        assert!(!err.contains("quiet"), "{err}");
        let lenient = BTreeMap::from([("payments".to_string(), DeadLetterLimit::Share(0.5))]);
        check(&lenient, &sources).unwrap();
    }
}
