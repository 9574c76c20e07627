//! Table options: the allowed set per kind, and typed, validated access.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Result, SqlError};

/// One option a table kind accepts, with a one-line description of valid values.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The option's name as written in `OPTIONS ('name' 'value')`.
    pub name: &'static str,
    /// What a valid value looks like (shown in errors).
    pub expected: &'static str,
}

/// Options every kind accepts: stream facts (watermark, trigger) and delivery facts.
pub const COMMON_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "watermark",
        expected: "'<column>' or '<column> - INTERVAL ''<n> <unit>'''",
    },
    OptionSpec {
        name: "max_rows",
        expected: "a positive whole number of rows per micro-batch",
    },
    OptionSpec {
        name: "max_delay",
        expected: "a duration such as '200 ms', '1 second'",
    },
    OptionSpec {
        name: "idle_timeout",
        expected: "a duration such as '10 seconds': a source partition without data that long is left out of the watermark (default 10 seconds)",
    },
    OptionSpec {
        name: "merge_key",
        expected: "a comma-separated list of output columns",
    },
    OptionSpec {
        name: "live_retention",
        expected: "'<n> rows' or a duration such as '10 minutes': a sink without a 'merge_key' is also a live table (queried over Flight SQL) of its last n rows, or of the rows written within that duration",
    },
    OptionSpec {
        name: "allowed_lateness",
        expected: "a duration such as '10 minutes': a windowed aggregate writing into this table (which needs a 'merge_key') keeps each window that long after emitting it; a late row within it corrects the window, emitted again as an upsert",
    },
    OptionSpec {
        name: "state_ttl",
        expected: "a duration such as '1 hour': an aggregate without a window writing into this table forgets a group not updated for that long in event time (its results then differ from batch)",
    },
    OptionSpec {
        name: "max_dead_letters",
        expected: "a share of a source's records such as '10%' (the default), or a number of records such as '1000' ('0' fails on the first): when more of its records go to dead letters (undecodable or late), run, batch and verify exit with an error naming the source; '100%' never fails",
    },
    OptionSpec {
        name: "dead_letter",
        expected: "where rows the pipeline cannot process go: a directory for JSON-lines files (default '.volley/dead_letters/<table>'), 'kafka://host:port/topic', or 'delta:<location>' for a Delta table",
    },
];

/// The validated options of one table, with accessors whose errors name the table and option.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableOptions {
    table: String,
    values: BTreeMap<String, String>,
}

impl TableOptions {
    /// Checks every option against `common + kind_specific`, case-insensitively.
    ///
    /// # Errors
    /// [`SqlError::UnknownOption`] naming the first unknown option and all allowed ones.
    pub fn validate(
        table: &str,
        kind: &str,
        raw: impl IntoIterator<Item = (String, String)>,
        kind_specific: &[OptionSpec],
    ) -> Result<Self> {
        Self::check(table, kind, raw, COMMON_OPTIONS, kind_specific)
    }

    /// Checks every option against `allowed` alone (declarations that are not tables).
    ///
    /// # Errors
    /// [`SqlError::UnknownOption`] naming the first unknown option and all allowed ones.
    pub fn validate_only(
        name: &str,
        kind: &str,
        raw: impl IntoIterator<Item = (String, String)>,
        allowed: &[OptionSpec],
    ) -> Result<Self> {
        Self::check(name, kind, raw, &[], allowed)
    }

    fn check(
        table: &str,
        kind: &str,
        raw: impl IntoIterator<Item = (String, String)>,
        common: &[OptionSpec],
        kind_specific: &[OptionSpec],
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (key, value) in raw {
            let key = key.to_ascii_lowercase();
            let known = common
                .iter()
                .chain(kind_specific)
                .any(|spec| spec.name == key);
            if !known {
                let mut allowed: Vec<&str> =
                    kind_specific.iter().chain(common).map(|s| s.name).collect();
                allowed.sort_unstable();
                return Err(SqlError::UnknownOption {
                    table: table.to_string(),
                    kind: kind.to_string(),
                    option: key,
                    allowed: allowed.join(", "),
                });
            }
            values.insert(key, value);
        }
        Ok(Self {
            table: table.to_string(),
            values,
        })
    }

    /// Options with no validation, for tables made in code (tests, `--input` bindings).
    pub fn unchecked(table: &str, values: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            table: table.to_string(),
            values: values.into_iter().collect(),
        }
    }

    /// The table these options belong to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The same options without `name` (an operational option a caller overrides).
    pub fn without(&self, name: &str) -> Self {
        let mut options = self.clone();
        options.values.remove(&name.to_ascii_lowercase());
        options
    }

    /// The raw value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// All options, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// An error for option `name` with value `value`, saying what was expected.
    pub fn bad(&self, name: &str, value: &str, expected: &str) -> SqlError {
        SqlError::BadOption {
            table: self.table.clone(),
            option: name.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// A whole number option.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] when the value is not a non-negative whole number.
    pub fn get_u64(&self, name: &str) -> Result<Option<u64>> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| self.bad(name, v, "a non-negative whole number"))
            })
            .transpose()
    }

    /// A whole number option that must be at least 1.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] when the value is not a positive whole number.
    pub fn get_positive(&self, name: &str) -> Result<Option<u64>> {
        match self.get_u64(name)? {
            Some(0) => Err(self.bad(name, "0", "a positive whole number")),
            other => Ok(other),
        }
    }

    /// A floating-point option.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] when the value is not a finite number.
    pub fn get_f64(&self, name: &str) -> Result<Option<f64>> {
        self.get(name)
            .map(|v| match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(self.bad(name, v, "a finite number")),
            })
            .transpose()
    }

    /// A boolean option (`true`/`false`).
    ///
    /// # Errors
    /// [`SqlError::BadOption`] for anything but true/false.
    pub fn get_bool(&self, name: &str) -> Result<Option<bool>> {
        self.get(name)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.bad(name, v, "true or false")),
            })
            .transpose()
    }

    /// A duration option such as `'5 seconds'`, `'200 ms'`, `'1 minute'`.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] when the value is not `<number> <unit>`.
    pub fn get_duration(&self, name: &str) -> Result<Option<Duration>> {
        self.get(name)
            .map(|v| {
                parse_duration(v).ok_or_else(|| {
                    self.bad(
                        name,
                        v,
                        "a duration such as '200 ms', '5 seconds', '1 minute'",
                    )
                })
            })
            .transpose()
    }

    /// A comma-separated list of identifiers (e.g. `merge_key`).
    pub fn get_list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|v| {
            v.split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    }
}

/// Parses `<number> <unit>` (ns, us, ms, s, sec(s), second(s), m, min(s), minute(s), h, hour(s), day(s)).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let unit_nanos: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ns" | "nanosecond" | "nanoseconds" => 1.0,
        "us" | "microsecond" | "microseconds" => 1e3,
        "ms" | "millisecond" | "milliseconds" => 1e6,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1e9,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e9,
        "h" | "hour" | "hours" => 3600e9,
        "d" | "day" | "days" => 86_400e9,
        _ => return None,
    };
    Some(Duration::from_nanos((number * unit_nanos).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200 ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("5 seconds"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1minute"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5 s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("five"), None);
        assert_eq!(parse_duration("3 fortnights"), None);
    }

    #[test]
    fn unknown_option_names_table_and_allowed() {
        let err = TableOptions::validate(
            "rides",
            "GENERATOR",
            [("colour".to_string(), "red".to_string())],
            &[OptionSpec {
                name: "seed",
                expected: "n",
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rides") && err.contains("colour") && err.contains("seed"),
            "{err}"
        );
    }
}
