//! Options of `STORED AS PARQUET | CSV | JSON` tables.

use volley_sql::{OptionSpec, SqlError, TableOptions};

/// The order a file source with a watermark is replayed in.
const REPLAY_ORDER_OPTION: OptionSpec = OptionSpec {
    name: "replay_order",
    expected: "'event_time' (default: the files are read sorted by the watermark's column, so a run over history gives the batch answer) or 'file' (as the files hold them: rows behind the watermark are then late)",
};

/// How much memory sorting a file source by event time may take before it spills.
const SORT_MEMORY_OPTION: OptionSpec = OptionSpec {
    name: "sort_memory",
    expected: "a size such as '256 MiB' (the default) or '2 GiB': the memory sorting the files by event time may use before spilling to the temporary directory",
};

/// Options a Parquet table accepts beyond the common ones.
pub const PARQUET_OPTIONS: &[OptionSpec] = &[REPLAY_ORDER_OPTION, SORT_MEMORY_OPTION];

/// Options a JSON table accepts beyond the common ones.
pub const JSON_OPTIONS: &[OptionSpec] = &[
    crate::codec::timestamps::TIMESTAMP_UNIT_OPTION,
    REPLAY_ORDER_OPTION,
    SORT_MEMORY_OPTION,
];

/// Options a CSV table accepts beyond the common ones.
pub const CSV_OPTIONS: &[OptionSpec] = &[
    crate::codec::timestamps::TIMESTAMP_UNIT_OPTION,
    REPLAY_ORDER_OPTION,
    SORT_MEMORY_OPTION,
    OptionSpec {
        name: "has_header",
        expected: "true or false (default true)",
    },
    OptionSpec {
        name: "delimiter",
        expected: "a single character such as ',' or '|', or '\\t' (default ',')",
    },
];

/// The order a bounded file source is read in (option `replay_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOrder {
    /// Sorted by the watermark's column (the default for a table with a watermark).
    EventTime,
    /// As the files hold the rows, in path order.
    File,
}

/// The default `sort_memory`: 256 MiB.
pub const DEFAULT_SORT_MEMORY: usize = 256 << 20;

/// Parsed file-format options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// CSV: whether the first line names the columns (read) / a header is written (write).
    pub has_header: bool,
    /// CSV: the field delimiter.
    pub delimiter: u8,
    /// CSV and JSON: what a number in a TIMESTAMP column counts (None: numbers are refused).
    pub timestamp_unit: Option<crate::codec::TimestampUnit>,
    /// The order a source with a watermark is read in.
    pub replay_order: ReplayOrder,
    /// The memory sorting by event time may use before spilling, in bytes.
    pub sort_memory: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            has_header: true,
            delimiter: b',',
            timestamp_unit: None,
            replay_order: ReplayOrder::EventTime,
            sort_memory: DEFAULT_SORT_MEMORY,
        }
    }
}

impl FileOptions {
    /// Reads the file options of a table, applying defaults.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] naming the table and option when a value is invalid.
    pub fn from_options(options: &TableOptions) -> Result<Self, SqlError> {
        let defaults = Self::default();
        let delimiter = match options.get("delimiter") {
            None => defaults.delimiter,
            Some("\\t") | Some("\t") => b'\t',
            Some(text) => match text.as_bytes() {
                [byte] if byte.is_ascii() && !matches!(byte, b'\n' | b'\r' | b'"') => *byte,
                _ => {
                    return Err(options.bad(
                        "delimiter",
                        text,
                        "a single ASCII character other than a quote or newline, or '\\t'",
                    ));
                }
            },
        };
        Ok(Self {
            has_header: options
                .get_bool("has_header")?
                .unwrap_or(defaults.has_header),
            delimiter,
            timestamp_unit: crate::codec::timestamps::timestamp_unit(options)?,
            replay_order: match options.get("replay_order") {
                None => defaults.replay_order,
                Some(text) if text.eq_ignore_ascii_case("event_time") => ReplayOrder::EventTime,
                Some(text) if text.eq_ignore_ascii_case("file") => ReplayOrder::File,
                Some(text) => {
                    return Err(options.bad("replay_order", text, "'event_time' or 'file'"));
                }
            },
            sort_memory: match options.get("sort_memory") {
                None => defaults.sort_memory,
                Some(text) => parse_size(text).filter(|n| *n >= 1 << 20).ok_or_else(|| {
                    options.bad(
                        "sort_memory",
                        text,
                        "a size of at least 1 MiB such as '256 MiB' or '2 GiB'",
                    )
                })?,
            },
        })
    }
}

/// A size in bytes: `1048576`, `512 KiB`, `256 MiB`, `2 GiB` (KB, MB and GB count the same).
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> TableOptions {
        TableOptions::unchecked(
            "trips",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn csv_options_parse() {
        assert_eq!(
            FileOptions::from_options(&opts(&[])).unwrap(),
            FileOptions::default()
        );
        let o = FileOptions::from_options(&opts(&[("has_header", "false"), ("delimiter", "|")]))
            .unwrap();
        assert_eq!(
            o,
            FileOptions {
                has_header: false,
                delimiter: b'|',
                timestamp_unit: None,
                replay_order: ReplayOrder::EventTime,
                sort_memory: DEFAULT_SORT_MEMORY,
            }
        );
        assert_eq!(
            FileOptions::from_options(&opts(&[("delimiter", "\\t")]))
                .unwrap()
                .delimiter,
            b'\t'
        );
    }

    #[test]
    fn replay_order_and_sort_memory_parse() {
        let o = FileOptions::from_options(&opts(&[
            ("replay_order", "file"),
            ("sort_memory", "64 MiB"),
        ]))
        .unwrap();
        assert_eq!(o.replay_order, ReplayOrder::File);
        assert_eq!(o.sort_memory, 64 << 20);
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("lots"), None);
        for (name, bad) in [("replay_order", "arrival"), ("sort_memory", "12 KiB")] {
            let err = FileOptions::from_options(&opts(&[(name, bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("trips") && err.contains(name), "{err}");
        }
    }

    #[test]
    fn bad_delimiter_names_table_and_option() {
        for bad in ["", ";;", "é"] {
            let err = FileOptions::from_options(&opts(&[("delimiter", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("trips") && err.contains("delimiter"), "{err}");
        }
        let err = FileOptions::from_options(&opts(&[("has_header", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has_header"), "{err}");
    }
}
