//! Options of `STORED AS PARQUET | CSV | JSON` tables.

use volley_sql::{OptionSpec, SqlError, TableOptions};

/// Options a JSON table accepts beyond the common ones.
pub const JSON_OPTIONS: &[OptionSpec] = &[crate::codec::timestamps::TIMESTAMP_UNIT_OPTION];

/// Options a CSV table accepts beyond the common ones.
pub const CSV_OPTIONS: &[OptionSpec] = &[
    crate::codec::timestamps::TIMESTAMP_UNIT_OPTION,
    OptionSpec {
        name: "has_header",
        expected: "true or false (default true)",
    },
    OptionSpec {
        name: "delimiter",
        expected: "a single character such as ',' or '|', or '\\t' (default ',')",
    },
];

/// Parsed file-format options; formats other than CSV have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// CSV: whether the first line names the columns (read) / a header is written (write).
    pub has_header: bool,
    /// CSV: the field delimiter.
    pub delimiter: u8,
    /// CSV and JSON: what a number in a TIMESTAMP column counts (None: numbers are refused).
    pub timestamp_unit: Option<crate::codec::TimestampUnit>,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            has_header: true,
            delimiter: b',',
            timestamp_unit: None,
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
        })
    }
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
