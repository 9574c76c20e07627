//! Options of `STORED AS KAFKA` tables, and their `LOCATION 'host:port[,host:port…]/topic'`.

use std::time::Duration;

use volley_sql::{OptionSpec, SqlError, TableDecl, TableOptions};

/// Options a Kafka table accepts beyond the common ones.
pub const KAFKA_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "format",
        expected: "'json' (one object per message, the default), 'csv' (one record per message, fields in column order, no header) or 'raw' (the value as a column named 'value')",
    },
    OptionSpec {
        name: "delimiter",
        expected: "with 'format' 'csv': the field separator, one character (default ',')",
    },
    crate::codec::timestamps::TIMESTAMP_UNIT_OPTION,
    OptionSpec {
        name: "start",
        expected: "'earliest' (the default), 'latest', or a timestamp such as '2026-11-24T08:00:00Z' (each partition's first message at or after it): where to begin when no checkpoint exists",
    },
    OptionSpec {
        name: "bounded",
        expected: "'latest' (stop once every partition has been read to its end) or 'none' (the default: never stop)",
    },
    OptionSpec {
        name: "partitions",
        expected: "a comma-separated list of partition numbers to read (default: all)",
    },
    OptionSpec {
        name: "exactly_once",
        expected: "'true' or 'false' (the default): as a sink, one Kafka transaction per epoch with the epoch recorded in it",
    },
    OptionSpec {
        name: "group",
        expected: "a consumer group id: several `volley run` processes of this pipeline share the topic's partitions through it (scale-out, docs/scale-out.md); without it one process reads every partition",
    },
    OptionSpec {
        name: "partitioned_by",
        expected: "the column producers keyed messages by (its value picks the partition): in group mode an aggregate must group by it (or by '_key')",
    },
    OptionSpec {
        name: "session_timeout",
        expected: "in group mode, how long a silent member keeps its partitions before the group moves them (a duration, default '10s')",
    },
];

/// The `format` of message values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFormat {
    /// One JSON object per message, decoded into the table's columns.
    Json,
    /// One CSV record per message (no header), fields in the table's column order.
    Csv {
        /// The field separator.
        delimiter: u8,
    },
    /// The value itself, as the table's `value` column (Utf8 or Binary).
    Raw,
}

/// Where a source starts when no checkpoint says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Each partition's first retained offset.
    Earliest,
    /// Each partition's end: only messages produced after the source opens.
    Latest,
    /// Each partition's first message with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Parsed Kafka options and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Message value format.
    pub format: KafkaFormat,
    /// Where to start without a checkpoint.
    pub start: StartAt,
    /// Stop once every partition has been read to its end.
    pub bounded: bool,
    /// Partitions to read (`None`: all).
    pub partitions: Option<Vec<i32>>,
    /// Consumer group id: read offsets are committed to it for monitoring (positions live in
    /// checkpoints); with `shared`, processes split the partitions through it.
    pub group: String,
    /// The `group` option was given: group mode (scale-out).
    pub shared: bool,
    /// The column producers keyed messages by.
    pub partitioned_by: Option<String>,
    /// Group mode: the consumer group session timeout.
    pub session_timeout: Duration,
    /// How long to wait for the broker's answers to metadata and assignment requests.
    pub request_timeout: Duration,
    /// How long the broker may hold a fetch that has no new message: the table's
    /// `max_delay`, between 1 ms and 100 ms, so a low-latency source is not left waiting on
    /// an idle partition's fetch.
    pub fetch_wait: Duration,
    /// As a sink: one transaction per epoch (see the sink's docs).
    pub exactly_once: bool,
    /// What a number in a TIMESTAMP column counts (`timestamp_unit`; None: numbers are refused).
    pub timestamp_unit: Option<crate::codec::TimestampUnit>,
}

impl KafkaOptions {
    /// Reads the location and options of a Kafka table.
    ///
    /// # Errors
    /// [`SqlError::BadOption`] naming the table and option, or a pipeline error for a bad
    /// `LOCATION`.
    pub fn from_table(table: &TableDecl) -> Result<Self, SqlError> {
        let (brokers, topic) = parse_location(&table.name, &table.location)?;
        let options = &table.options;
        let format = match lower(options, "format").as_deref() {
            None | Some("json") => KafkaFormat::Json,
            Some("csv") => KafkaFormat::Csv {
                delimiter: match options.get("delimiter") {
                    None => b',',
                    Some("\\t") => b'\t',
                    Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
                    Some(d) => {
                        return Err(options.bad("delimiter", d, "one ASCII character, or '\\t'"));
                    }
                },
            },
            Some("raw") => KafkaFormat::Raw,
            Some(other) => return Err(options.bad("format", other, "'json', 'csv' or 'raw'")),
        };
        if options.get("delimiter").is_some() && !matches!(format, KafkaFormat::Csv { .. }) {
            let raw = options.get("delimiter").unwrap_or_default();
            return Err(options.bad("delimiter", raw, "no 'delimiter' unless 'format' is 'csv'"));
        }
        let start = match lower(options, "start").as_deref() {
            None | Some("earliest") => StartAt::Earliest,
            Some("latest") => StartAt::Latest,
            Some(other) => {
                let raw = options.get("start").unwrap_or(other).trim();
                let nanos = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(raw)
                    .map_err(|_| {
                        options.bad(
                            "start",
                            raw,
                            "'earliest', 'latest' or a timestamp such as '2026-11-24T08:00:00Z'",
                        )
                    })?;
                StartAt::Timestamp(nanos.div_euclid(1_000_000))
            }
        };
        let bounded = match lower(options, "bounded").as_deref() {
            None | Some("none") => false,
            Some("latest") => true,
            Some(other) => return Err(options.bad("bounded", other, "'latest' or 'none'")),
        };
        let partitions = match options.get("partitions") {
            None => None,
            Some(raw) => Some(parse_partitions(options, raw)?),
        };
        let group = match options.get("group") {
            None => format!("volley-{}", table.name),
            Some(raw) if raw.trim().is_empty() => {
                return Err(options.bad("group", raw, "a non-empty consumer group id"));
            }
            Some(raw) => raw.trim().to_string(),
        };
        let exactly_once = options.get_bool("exactly_once")?.unwrap_or(false);
        let partitioned_by = match options.get("partitioned_by") {
            None => None,
            Some(raw) if raw.trim().is_empty() => {
                return Err(options.bad("partitioned_by", raw, "a column name"));
            }
            Some(raw) => Some(raw.trim().to_string()),
        };
        let session_timeout = options
            .get_duration("session_timeout")?
            .unwrap_or(Duration::from_secs(10));
        if session_timeout < Duration::from_secs(1) {
            let raw = options.get("session_timeout").unwrap_or_default();
            return Err(options.bad("session_timeout", raw, "a duration of at least 1s"));
        }
        Ok(Self {
            brokers,
            topic,
            format,
            start,
            bounded,
            partitions,
            shared: options.get("group").is_some(),
            group,
            partitioned_by,
            session_timeout,
            request_timeout: Duration::from_secs(10),
            fetch_wait: table
                .max_delay()?
                .clamp(Duration::from_millis(1), Duration::from_millis(100)),
            exactly_once,
            timestamp_unit: crate::codec::timestamps::timestamp_unit(options)?,
        })
    }
}

fn lower(options: &TableOptions, name: &str) -> Option<String> {
    options.get(name).map(|v| v.trim().to_ascii_lowercase())
}

fn parse_partitions(options: &TableOptions, raw: &str) -> Result<Vec<i32>, SqlError> {
    let bad = || {
        options.bad(
            "partitions",
            raw,
            "a comma-separated list of partition numbers",
        )
    };
    let mut parts = raw
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        return Err(bad());
    }
    parts.sort_unstable();
    parts.dedup();
    Ok(parts)
}

/// `host:port[,host:port…]/topic` → (brokers, topic).
fn parse_location(table: &str, location: &str) -> Result<(String, String), SqlError> {
    let bad = |why: &str| {
        SqlError::Pipeline(format!(
            "table '{table}': LOCATION '{location}' {why}; expected 'host:port/topic' (several brokers: 'h1:9092,h2:9092/topic')"
        ))
    };
    let trimmed = location.trim().trim_start_matches("kafka://");
    let Some((brokers, topic)) = trimmed.rsplit_once('/') else {
        return Err(bad("names no topic"));
    };
    if topic.is_empty() || topic.contains(char::is_whitespace) {
        return Err(bad("has an empty or invalid topic"));
    }
    if brokers.is_empty()
        || brokers.split(',').any(|b| {
            b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        })
    {
        return Err(bad("has a broker that is not host:port"));
    }
    Ok((brokers.to_string(), topic.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use volley_sql::StatementRef;

    use super::*;

    fn table(location: &str, pairs: &[(&str, &str)]) -> TableDecl {
        TableDecl {
            name: "rides".into(),
            kind: "KAFKA".into(),
            location: location.into(),
            declared_schema: None,
            options: TableOptions::unchecked(
                "rides",
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            watermark: None,
            at: StatementRef::default(),
        }
    }

    #[test]
    fn location_and_defaults() {
        let o = KafkaOptions::from_table(&table("localhost:9092/ride_requests", &[])).unwrap();
        assert_eq!(o.brokers, "localhost:9092");
        assert_eq!(o.topic, "ride_requests");
        assert_eq!(o.format, KafkaFormat::Json);
        assert_eq!(o.start, StartAt::Earliest);
        assert!(!o.bounded && o.partitions.is_none());
        assert_eq!(o.group, "volley-rides");
        let o = KafkaOptions::from_table(&table(
            "a:1,b:2/t",
            &[
                ("format", "RAW"),
                ("start", "latest"),
                ("bounded", "latest"),
                ("partitions", "2, 0,2"),
                ("group", "g"),
            ],
        ))
        .unwrap();
        assert_eq!(o.brokers, "a:1,b:2");
        assert_eq!(
            (o.format, o.start, o.bounded),
            (KafkaFormat::Raw, StartAt::Latest, true)
        );
        assert_eq!(o.partitions, Some(vec![0, 2]));
        assert_eq!(o.group, "g");
    }

    #[test]
    fn the_broker_holds_an_empty_fetch_for_at_most_max_delay() {
        let wait = |options: &[(&str, &str)]| {
            KafkaOptions::from_table(&table("h:1/t", options))
                .unwrap()
                .fetch_wait
        };
        assert_eq!(wait(&[("max_delay", "5 ms")]), Duration::from_millis(5));
        assert_eq!(wait(&[("max_delay", "100us")]), Duration::from_millis(1));
        assert_eq!(wait(&[("max_delay", "2s")]), Duration::from_millis(100));
        assert_eq!(wait(&[]), Duration::from_millis(100));
    }

    #[test]
    fn start_at_a_timestamp_and_csv_delimiters() {
        let o = KafkaOptions::from_table(&table(
            "h:1/t",
            &[
                ("start", "2026-11-24T08:00:00Z"),
                ("format", "csv"),
                ("delimiter", "|"),
            ],
        ))
        .unwrap();
        assert_eq!(o.start, StartAt::Timestamp(1_795_507_200_000));
        assert_eq!(o.format, KafkaFormat::Csv { delimiter: b'|' });
        let tab =
            KafkaOptions::from_table(&table("h:1/t", &[("format", "csv"), ("delimiter", "\\t")]))
                .unwrap();
        assert_eq!(tab.format, KafkaFormat::Csv { delimiter: b'\t' });
        for (pairs, option) in [
            (vec![("start", "yesterday")], "start"),
            (vec![("format", "csv"), ("delimiter", "||")], "delimiter"),
            (vec![("delimiter", ";")], "delimiter"),
        ] {
            let err = KafkaOptions::from_table(&table("h:1/t", &pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(option), "{err}");
        }
    }

    #[test]
    fn bad_locations_and_options_name_table_and_option() {
        for location in [
            "localhost:9092",
            "localhost/t",
            "localhost:x/t",
            ":9092/t",
            "h:1/",
        ] {
            let err = KafkaOptions::from_table(&table(location, &[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("rides") && err.contains("LOCATION"), "{err}");
        }
        for (name, value) in [
            ("format", "avro"),
            ("start", "yesterday"),
            ("bounded", "soon"),
            ("partitions", "1,x"),
            ("partitions", "-1"),
            ("group", " "),
        ] {
            let err = KafkaOptions::from_table(&table("h:1/t", &[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("rides") && err.contains(name), "{err}");
        }
    }
}
