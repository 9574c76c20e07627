//! A table declared with `CREATE EXTERNAL TABLE`: its kind, location, schema and options.

use std::time::Duration;

use arrow::datatypes::SchemaRef;

use crate::error::{Result, StatementRef};
use crate::options::{OptionSpec, TableOptions};
use crate::watermark::WatermarkSpec;

/// Default micro-batch row bound when a source sets no `max_rows`.
pub const DEFAULT_MAX_ROWS: usize = 65_536;
/// Default micro-batch time bound when a source sets no `max_delay`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Default `idle_timeout`: how long a source partition may go without data before the
/// watermark stops waiting for it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pipeline says about one table.
#[derive(Debug, Clone)]
pub struct TableDecl {
    /// Table name as used in queries (lower-cased unless quoted).
    pub name: String,
    /// The `STORED AS` kind, upper-cased (`GENERATOR`, `PARQUET`, …).
    pub kind: String,
    /// The `LOCATION`, as written.
    pub location: String,
    /// Columns declared in the statement, if any.
    pub declared_schema: Option<SchemaRef>,
    /// Validated options.
    pub options: TableOptions,
    /// The event-time column and bound on disorder, from the `watermark` option.
    pub watermark: Option<WatermarkSpec>,
    /// Where the table was declared.
    pub at: StatementRef,
}

impl TableDecl {
    /// Rows per micro-batch (`max_rows`), or the default.
    ///
    /// # Errors
    /// A bad `max_rows` value.
    pub fn max_rows(&self) -> Result<usize> {
        Ok(self
            .options
            .get_positive("max_rows")?
            .map_or(DEFAULT_MAX_ROWS, |n| n as usize))
    }

    /// Longest wait before a micro-batch is cut (`max_delay`), or the default.
    ///
    /// # Errors
    /// A bad `max_delay` value.
    pub fn max_delay(&self) -> Result<Duration> {
        Ok(self
            .options
            .get_duration("max_delay")?
            .unwrap_or(DEFAULT_MAX_DELAY))
    }

    /// How long a partition may be silent before the watermark leaves it out (`idle_timeout`).
    ///
    /// # Errors
    /// A bad `idle_timeout` value.
    pub fn idle_timeout(&self) -> Result<Duration> {
        Ok(self
            .options
            .get_duration("idle_timeout")?
            .unwrap_or(DEFAULT_IDLE_TIMEOUT))
    }

    /// A sink's `state_ttl`: how long (in event time) a keyed aggregate writing into it keeps a
    /// group that is not updated.
    ///
    /// # Errors
    /// A bad `state_ttl` value.
    pub fn state_ttl(&self) -> Result<Option<Duration>> {
        self.options.get_duration("state_ttl")
    }

    /// A sink's `allowed_lateness`: how long a windowed aggregate writing into it keeps each
    /// window after emitting it, to correct it with late rows.
    ///
    /// # Errors
    /// A bad `allowed_lateness` value.
    pub fn allowed_lateness(&self) -> Result<Option<Duration>> {
        self.options.get_duration("allowed_lateness")
    }

    /// How many of this source's records may go to dead letters before a run fails
    /// (`max_dead_letters`), or the default: 10%.
    ///
    /// # Errors
    /// A bad `max_dead_letters` value.
    pub fn max_dead_letters(&self) -> Result<DeadLetterLimit> {
        let Some(text) = self.options.get("max_dead_letters") else {
            return Ok(DeadLetterLimit::DEFAULT);
        };
        DeadLetterLimit::parse(text).ok_or_else(|| {
            self.options.bad(
                "max_dead_letters",
                text,
                "a share such as '10%' (0% to 100%) or a number of records such as '1000'",
            )
        })
    }

    /// The `merge_key` columns, if declared.
    pub fn merge_key(&self) -> Option<Vec<String>> {
        self.options.get_list("merge_key")
    }
}

/// How many of a source's records may go to dead letters (undecodable or late) before `run`,
/// `batch` or `verify` fails: Spark's FAILFAST is `Count(0)`, PERMISSIVE is `Share(1.0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeadLetterLimit {
    /// At most this share (0 to 1) of the records the source read.
    Share(f64),
    /// At most this many records.
    Count(u64),
}

impl DeadLetterLimit {
    /// The default: a tenth of the records.
    pub const DEFAULT: Self = Self::Share(0.1);

    /// Parses `'10%'` or `'1000'`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(share) => {
                let share: f64 = share.trim().parse().ok()?;
                (0.0..=100.0)
                    .contains(&share)
                    .then_some(Self::Share(share / 100.0))
            }
            None => text.parse().ok().map(Self::Count),
        }
    }

    /// Whether `letters` dead letters out of `records` records pass the limit.
    pub fn exceeded(&self, letters: u64, records: u64) -> bool {
        match *self {
            Self::Share(share) => letters > 0 && letters as f64 > share * records as f64,
            Self::Count(most) => letters > most,
        }
    }
}

impl std::fmt::Display for DeadLetterLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Share(share) => write!(f, "'{}%'", share * 100.0),
            Self::Count(most) => write!(f, "'{most}'"),
        }
    }
}

/// The kinds of table that exist, and the options each accepts.
///
/// Implemented by the connector registry; `sql` uses it to validate `CREATE EXTERNAL TABLE`
/// without depending on any connector.
pub trait KindCatalog: Send + Sync {
    /// The options `kind` accepts beyond [`crate::options::COMMON_OPTIONS`], or `None` if the
    /// kind does not exist.
    fn kind_options(&self, kind: &str) -> Option<&'static [OptionSpec]>;
    /// All kinds, for error messages.
    fn kinds(&self) -> Vec<&'static str>;
}

#[cfg(test)]
mod dead_letter_limit_tests {
    use super::DeadLetterLimit;

    #[test]
    fn shares_and_counts() {
        assert_eq!(
            DeadLetterLimit::parse("10%"),
            Some(DeadLetterLimit::Share(0.1))
        );
        assert_eq!(DeadLetterLimit::parse("0"), Some(DeadLetterLimit::Count(0)));
        assert_eq!(DeadLetterLimit::parse("120%"), None);
        assert_eq!(DeadLetterLimit::parse("many"), None);
        let ten = DeadLetterLimit::DEFAULT;
        assert!(!ten.exceeded(10, 100));
        assert!(ten.exceeded(11, 100));
        assert!(!ten.exceeded(0, 0));
        assert!(DeadLetterLimit::Share(0.0).exceeded(1, 1_000_000));
        assert!(!DeadLetterLimit::Share(1.0).exceeded(100, 100));
        assert!(DeadLetterLimit::Count(0).exceeded(1, 10));
        assert_eq!(ten.to_string(), "'10%'");
    }
}
