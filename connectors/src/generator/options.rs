//! Options of `STORED AS GENERATOR` tables, parsed into [`GeneratorOptions`].

use std::time::Duration;

use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use volley_sql::{OptionSpec, SqlError, TableOptions};

/// Options a GENERATOR table accepts beyond the common ones.
pub const GENERATOR_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "count",
        expected: "a whole number of rows to generate (absent = unbounded)",
    },
    OptionSpec {
        name: "rate",
        expected: "events per second of event time, a positive number (default 1000)",
    },
    OptionSpec {
        name: "start_time",
        expected: "a timestamp such as '2026-01-01T00:00:00Z' or '2026-01-01 00:00:00' (default 2026-01-01 00:00:00)",
    },
    OptionSpec {
        name: "seed",
        expected: "a whole number (default 42)",
    },
    OptionSpec {
        name: "disorder",
        expected: "a duration such as '5 seconds' (default 0)",
    },
    OptionSpec {
        name: "pace",
        expected: "'max' (as fast as possible, the default) or 'realtime'",
    },
    OptionSpec {
        name: "riders",
        expected: "a positive whole number of riders (rides) or users (payments) (default 100000)",
    },
    OptionSpec {
        name: "cities",
        expected: "a positive whole number of cities (default 50)",
    },
    OptionSpec {
        name: "events",
        expected: "for LOCATION 'nexmark': which events the table holds, 'person', 'auction' or 'bid'",
    },
];

/// 2026-01-01T00:00:00Z in nanoseconds since the Unix epoch.
pub const DEFAULT_START_NANOS: i64 = 1_767_225_600_000_000_000;

/// How fast a generator hands out rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// As fast as the engine asks.
    #[default]
    Max,
    /// No faster than `rate` rows per wall-clock second.
    Realtime,
}

/// Which stream a GENERATOR table's `LOCATION` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeneratorStream {
    /// Ride requests with hot-city skew ([`super::generate_rides`]).
    #[default]
    Rides,
    /// Card payments with NULLs, NaN, ±0, ±inf, hot keys and window-edge times
    /// ([`super::generate_payments`]).
    Payments,
    /// One table of the Nexmark benchmark ([`super::generate_nexmark`]).
    Nexmark(super::NexmarkTable),
}

impl GeneratorStream {
    /// Every stream, by `LOCATION` name.
    pub const ALL: [(&'static str, GeneratorStream); 2] = [
        ("rides", GeneratorStream::Rides),
        ("payments", GeneratorStream::Payments),
    ];

    /// The stream a `LOCATION` names (case-insensitive, surrounding spaces ignored).
    pub fn from_location(location: &str) -> Option<Self> {
        let name = location.trim();
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
    }

    /// The stream's columns.
    pub fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            GeneratorStream::Rides => super::rides_schema(),
            GeneratorStream::Payments => super::payments_schema(),
            GeneratorStream::Nexmark(table) => table.schema(),
        }
    }
}

/// Everything that determines a generated stream. Row `i` is a pure function of these and `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorOptions {
    /// Which stream.
    pub stream: GeneratorStream,
    /// Total rows; `None` is unbounded.
    pub count: Option<u64>,
    /// Events per second of event time: row `i`'s base time is `start + i / rate` seconds.
    pub rate: f64,
    /// Base time of row 0, nanoseconds since the Unix epoch (UTC).
    pub start_time_nanos: i64,
    /// Seed of every pseudo-random choice (Nexmark: the first event id, 0 unless given).
    pub seed: u64,
    /// Largest amount an event's time lags its base time.
    pub disorder: Duration,
    /// Wall-clock pacing.
    pub pace: Pace,
    /// Size of the rider population.
    pub riders: u64,
    /// Number of cities (the 5 hottest get ~80% of events).
    pub cities: u64,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            stream: GeneratorStream::Rides,
            count: None,
            rate: 1000.0,
            start_time_nanos: DEFAULT_START_NANOS,
            seed: 42,
            disorder: Duration::ZERO,
            pace: Pace::Max,
            riders: 100_000,
            cities: 50,
        }
    }
}

impl GeneratorOptions {
    /// Reads the generator options of a table, applying defaults.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] naming the table and the option whose value is invalid.
    pub fn from_options(options: &TableOptions) -> Result<Self, SqlError> {
        let defaults = Self::default();
        let rate = match options.get_f64("rate")? {
            Some(rate) if rate < 0.001 => {
                return Err(options.bad(
                    "rate",
                    &rate.to_string(),
                    "a number of events per second, at least 0.001",
                ));
            }
            Some(rate) => rate,
            None => defaults.rate,
        };
        let start_time_nanos = match options.get("start_time") {
            Some(text) => string_to_timestamp_nanos(text.trim()).map_err(|_| {
                options.bad(
                    "start_time",
                    text,
                    "a timestamp such as '2026-01-01 00:00:00'",
                )
            })?,
            None => defaults.start_time_nanos,
        };
        let pace = match options.get("pace").map(|p| p.trim().to_ascii_lowercase()) {
            None => Pace::Max,
            Some(p) if p == "max" => Pace::Max,
            Some(p) if p == "realtime" => Pace::Realtime,
            Some(p) => return Err(options.bad("pace", &p, "'max' or 'realtime'")),
        };
        Ok(Self {
            stream: defaults.stream,
            count: options.get_u64("count")?,
            rate,
            start_time_nanos,
            seed: options.get_u64("seed")?.unwrap_or(defaults.seed),
            disorder: options
                .get_duration("disorder")?
                .unwrap_or(defaults.disorder),
            pace,
            riders: options.get_positive("riders")?.unwrap_or(defaults.riders),
            cities: options.get_positive("cities")?.unwrap_or(defaults.cities),
        })
    }

    /// `rate` in events per thousand seconds, so event spacing is exact integer arithmetic.
    pub(crate) fn rate_milli(&self) -> u128 {
        let milli = (self.rate * 1000.0).round();
        if milli.is_finite() && milli >= 1.0 {
            milli as u128
        } else {
            1
        }
    }

    /// Nanoseconds from row 0's base time to row `i`'s base time.
    pub(crate) fn offset_nanos(&self, i: u64) -> u128 {
        u128::from(i) * 1_000_000_000_000 / self.rate_milli()
    }

    /// Row `i`'s base event time (before disorder), nanoseconds since the Unix epoch.
    pub fn base_time_nanos(&self, i: u64) -> i64 {
        let offset = i64::try_from(self.offset_nanos(i)).unwrap_or(i64::MAX);
        self.start_time_nanos.saturating_add(offset)
    }
}

/// Base times of consecutive rows, stepping by quotient and remainder instead of dividing per
/// row; equal to [`GeneratorOptions::base_time_nanos`] for every row.
#[derive(Debug, Clone)]
pub(crate) struct BaseTimes {
    start: i64,
    offset: u128,
    remainder: u128,
    step: u128,
    step_remainder: u128,
    divisor: u128,
}

impl BaseTimes {
    /// Base times starting at row `row`.
    pub(crate) fn from_row(opts: &GeneratorOptions, row: u64) -> Self {
        let divisor = opts.rate_milli();
        let numerator = u128::from(row) * 1_000_000_000_000;
        Self {
            start: opts.start_time_nanos,
            offset: numerator / divisor,
            remainder: numerator % divisor,
            step: 1_000_000_000_000 / divisor,
            step_remainder: 1_000_000_000_000 % divisor,
            divisor,
        }
    }

    /// The current row's base time; moves to the next row.
    pub(crate) fn advance(&mut self) -> i64 {
        let time = self
            .start
            .saturating_add(i64::try_from(self.offset).unwrap_or(i64::MAX));
        self.offset += self.step;
        self.remainder += self.step_remainder;
        if self.remainder >= self.divisor {
            self.remainder -= self.divisor;
            self.offset += 1;
        }
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> TableOptions {
        TableOptions::unchecked(
            "rides",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_apply() {
        assert_eq!(
            GeneratorOptions::from_options(&opts(&[])).unwrap(),
            GeneratorOptions::default()
        );
    }

    #[test]
    fn values_parse() {
        let o = GeneratorOptions::from_options(&opts(&[
            ("count", "10"),
            ("rate", "2.5"),
            ("start_time", "2026-01-01 00:00:10"),
            ("seed", "7"),
            ("disorder", "5 seconds"),
            ("pace", "RealTime"),
        ]))
        .unwrap();
        assert_eq!(o.count, Some(10));
        assert_eq!(o.start_time_nanos, DEFAULT_START_NANOS + 10_000_000_000);
        assert_eq!(o.pace, Pace::Realtime);
        assert_eq!(o.disorder, Duration::from_secs(5));
        assert_eq!(o.base_time_nanos(5), o.start_time_nanos + 2_000_000_000);
        let rfc = GeneratorOptions::from_options(&opts(&[("start_time", "2026-01-01T00:00:00Z")]))
            .unwrap();
        assert_eq!(rfc.start_time_nanos, DEFAULT_START_NANOS);
    }

    #[test]
    fn stepped_base_times_match_the_formula() {
        for rate in [1000.0, 3.0, 0.7, 12_345.678] {
            let o = GeneratorOptions {
                rate,
                ..GeneratorOptions::default()
            };
            let mut times = BaseTimes::from_row(&o, 99);
            for i in 99..2000 {
                assert_eq!(times.advance(), o.base_time_nanos(i), "rate {rate} row {i}");
            }
        }
    }

    #[test]
    fn bad_values_name_table_and_option() {
        for (name, value) in [
            ("pace", "slow"),
            ("rate", "0"),
            ("start_time", "yesterday"),
            ("cities", "0"),
        ] {
            let err = GeneratorOptions::from_options(&opts(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("rides") && err.contains(name), "{err}");
        }
    }
}
