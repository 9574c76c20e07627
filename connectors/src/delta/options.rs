//! Options of `STORED AS DELTA` tables.

use volley_sql::{OptionSpec, SqlError, TableOptions};

/// Options a Delta table accepts beyond the common ones.
pub const DELTA_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "partition_by",
        expected: "a comma-separated list of output columns to partition a new table by",
    },
    OptionSpec {
        name: "app_id",
        expected: "a non-empty application id for the table's txn actions \
                   (default '<pipeline id>:<table name>')",
    },
    OptionSpec {
        name: "compact_every",
        expected: "a whole number of committed epochs between compactions (0 or absent: never)",
    },
    OptionSpec {
        name: "refresh",
        expected: "a lookup table's interval between looks for a newer version, such as '1 minute'",
    },
];

/// Parsed Delta options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaOptions {
    /// Columns a table created by the sink is partitioned by (empty: not partitioned).
    pub partition_by: Vec<String>,
    /// Overrides the application id of the sink's `txn` actions.
    pub app_id: Option<String>,
    /// Compact the table after this many epochs committed with rows; `None`: never.
    pub compact_every: Option<u64>,
}

impl DeltaOptions {
    /// Reads the Delta options of a table.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] naming the table and option when a value is invalid.
    pub fn from_options(options: &TableOptions) -> Result<Self, SqlError> {
        let partition_by = match options.get("partition_by") {
            None => Vec::new(),
            Some(raw) => {
                let columns = options.get_list("partition_by").unwrap_or_default();
                if columns.is_empty() {
                    return Err(options.bad(
                        "partition_by",
                        raw,
                        "a comma-separated list of output columns",
                    ));
                }
                columns
            }
        };
        let app_id = match options.get("app_id") {
            None => None,
            Some(raw) if raw.trim().is_empty() => {
                return Err(options.bad("app_id", raw, "a non-empty application id"));
            }
            Some(raw) => Some(raw.trim().to_string()),
        };
        let compact_every = options.get_u64("compact_every")?.filter(|n| *n > 0);
        Ok(Self {
            partition_by,
            app_id,
            compact_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> TableOptions {
        TableOptions::unchecked(
            "rides_out",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            DeltaOptions::from_options(&opts(&[])).unwrap(),
            DeltaOptions::default()
        );
        let o = DeltaOptions::from_options(&opts(&[
            ("partition_by", "day, zone"),
            ("app_id", " nightly "),
            ("compact_every", "10"),
        ]))
        .unwrap();
        assert_eq!(o.partition_by, vec!["day".to_string(), "zone".to_string()]);
        assert_eq!(o.app_id.as_deref(), Some("nightly"));
        assert_eq!(o.compact_every, Some(10));
        let never = DeltaOptions::from_options(&opts(&[("compact_every", "0")])).unwrap();
        assert_eq!(never.compact_every, None);
    }

    #[test]
    fn bad_values_name_table_and_option() {
        for (name, value) in [
            ("compact_every", "often"),
            ("compact_every", "-1"),
            ("partition_by", " , "),
            ("app_id", "  "),
        ] {
            let err = DeltaOptions::from_options(&opts(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("rides_out") && err.contains(name), "{err}");
        }
    }

    #[test]
    fn unknown_option_lists_delta_options() {
        let err = TableOptions::validate(
            "rides_out",
            "DELTA",
            [("partition".to_string(), "day".to_string())],
            DELTA_OPTIONS,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "rides_out",
            "partition",
            "partition_by",
            "app_id",
            "compact_every",
        ] {
            assert!(err.contains(expected), "{expected} missing from: {err}");
        }
    }
}
