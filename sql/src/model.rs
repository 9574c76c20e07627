//! `CREATE MODEL`: an ONNX model declared in the pipeline by name, for `predict('name', …)`.
//!
//! ```sql
//! CREATE MODEL fraud STORED AS ONNX LOCATION 'examples/fraud/fraud.onnx'
//! OPTIONS ('backend' 'tract', 'threads' '1', 'max_rows' '4096', 'null_policy' 'dead_letter',
//!          'memo' 'on', 'timeout' '10 seconds', 'max_in_flight' '2');
//! ```
//!
//! `STORED AS ONNX` may be left out. The statement is read by rewriting it to a
//! `CREATE EXTERNAL TABLE` (same name, location and options), so quoting and option syntax are
//! exactly those of table declarations.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use volley_udfs::model::{Backend, Device, ModelOptions, NullPolicy};

use crate::error::{Result, SqlError, StatementRef};
use crate::options::{OptionSpec, TableOptions};

/// The options `CREATE MODEL` accepts.
pub const MODEL_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "backend",
        expected: "'tract' (default: pure Rust, nothing to install) or 'onnxruntime' (ONNX Runtime's shared library: ORT_DYLIB_PATH, or the python3 package onnxruntime)",
    },
    OptionSpec {
        name: "device",
        expected: "'cpu' (default) or 'cuda' (ONNX Runtime's CUDA execution provider; implies backend 'onnxruntime')",
    },
    OptionSpec {
        name: "threads",
        expected: "a positive whole number of threads one model call may use (default: the backend's)",
    },
    OptionSpec {
        name: "max_rows",
        expected: "a positive whole number: the most rows one model call takes; bigger batches are split (default 8192)",
    },
    OptionSpec {
        name: "null_policy",
        expected: "what a row with a NULL input gets: 'dead_letter' (default: NULL, and the row goes to dead letters), 'null' (NULL only) or 'fail' (the pipeline stops)",
    },
    OptionSpec {
        name: "memo",
        expected: "'on' (default: a streaming job with checkpoints keeps each epoch's scores until a checkpoint covers it, so a replayed epoch reads them instead of calling the model) or 'off'",
    },
    OptionSpec {
        name: "timeout",
        expected: "the longest one model call may take, such as '500 ms' or '10 seconds' (default '30 seconds'), or 'none'; the rows of a call that takes longer go to dead letters",
    },
    OptionSpec {
        name: "max_in_flight",
        expected: "a positive whole number: model calls queued or running at once; more callers wait, within their timeout (default 2)",
    },
    OptionSpec {
        name: "dead_letter",
        expected: "where rows the model rejects go: a directory for JSON-lines files (default '.volley/dead_letters/model_<name>'), 'kafka://host:port/topic', or 'delta:<location>'",
    },
];

/// A model the pipeline declares.
#[derive(Debug, Clone)]
pub struct ModelDecl {
    /// The name `predict()` calls it by (lower-cased unless quoted).
    pub name: String,
    /// The ONNX file, as written.
    pub location: String,
    /// How it runs.
    pub options: ModelOptions,
    /// Where rows it rejects go (the `dead_letter` option), if set.
    pub dead_letter: Option<String>,
    /// Where the model was declared.
    pub at: StatementRef,
}

impl ModelDecl {
    /// Where rejected rows go: the `dead_letter` option or `.volley/dead_letters/model_<name>`
    /// (relative to the working directory, like every location).
    pub fn dead_letter_destination(&self) -> String {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| format!(".volley/dead_letters/model_{}", self.name))
    }
}

/// If `text` is a `CREATE MODEL` statement, the same statement as a `CREATE EXTERNAL TABLE`
/// (with `STORED AS ONNX` added when it names no kind).
pub(crate) fn as_create_table(text: &str) -> Option<String> {
    let tokens = Tokenizer::new(&GenericDialect {}, text).tokenize().ok()?;
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .take(4)
        .collect();
    let keyword = |i: usize, k: Keyword| matches!(&tokens[i], Token::Word(w) if w.keyword == k);
    let [create, model, name, rest @ ..] = significant.as_slice() else {
        return None;
    };
    let is_model =
        matches!(&tokens[*model], Token::Word(w) if w.value.eq_ignore_ascii_case("model"));
    if !keyword(*create, Keyword::CREATE) || !is_model {
        return None;
    }
    let names_kind = rest.first().is_some_and(|&i| keyword(i, Keyword::STORED));
    let mut out = String::with_capacity(text.len() + 32);
    for (i, token) in tokens.iter().enumerate() {
        if i == *model {
            out.push_str("EXTERNAL TABLE");
        } else {
            out.push_str(&token.to_string());
        }
        if i == *name && !names_kind {
            out.push_str(" STORED AS ONNX");
        }
    }
    Some(out)
}

/// Reads a model's options: everything but the location, checked.
///
/// # Errors
/// Unknown options and bad values, naming the model and option.
pub(crate) fn model_decl(
    name: String,
    kind: &str,
    location: String,
    raw: impl IntoIterator<Item = (String, String)>,
    at: StatementRef,
) -> Result<ModelDecl> {
    if !kind.eq_ignore_ascii_case("ONNX") {
        return Err(SqlError::Unsupported {
            at,
            message: format!("model '{name}': STORED AS {kind}; models are STORED AS ONNX"),
        });
    }
    if location.is_empty() {
        return Err(SqlError::Plan {
            at,
            message: format!("model '{name}': give the ONNX file as LOCATION '<path>'"),
        });
    }
    match model_options(&name, raw) {
        Ok(decl) => Ok(ModelDecl {
            name,
            location,
            options: decl.0,
            dead_letter: decl.1,
            at,
        }),
        // Option errors name the model, not a table.
        Err(SqlError::UnknownOption {
            option, allowed, ..
        }) => Err(SqlError::Plan {
            at,
            message: format!(
                "model '{name}': unknown option '{option}'; allowed options: {allowed}"
            ),
        }),
        Err(SqlError::BadOption {
            option,
            value,
            expected,
            ..
        }) => Err(SqlError::Plan {
            at,
            message: format!(
                "model '{name}': option '{option}' = '{value}' is invalid: expected {expected}"
            ),
        }),
        Err(other) => Err(other),
    }
}

/// The run options and dead-letter destination in a model's `OPTIONS`.
fn model_options(
    name: &str,
    raw: impl IntoIterator<Item = (String, String)>,
) -> Result<(ModelOptions, Option<String>)> {
    let options = TableOptions::validate_only(name, "ONNX", raw, MODEL_OPTIONS)?;
    let choice = |option: &str| {
        MODEL_OPTIONS
            .iter()
            .find(|s| s.name == option)
            .map_or("", |s| s.expected)
    };
    let device = match options.get("device") {
        Some(v) => Device::parse(v).ok_or_else(|| options.bad("device", v, choice("device")))?,
        None => Device::Cpu,
    };
    let backend = match options.get("backend") {
        Some(v) => Backend::parse(v).ok_or_else(|| options.bad("backend", v, choice("backend")))?,
        None if device == Device::Cuda => Backend::OnnxRuntime,
        None => Backend::Tract,
    };
    if device == Device::Cuda && backend != Backend::OnnxRuntime {
        return Err(options.bad(
            "device",
            "cuda",
            "'cpu' with backend 'tract': CUDA runs on backend 'onnxruntime'",
        ));
    }
    let null_policy = match options.get("null_policy") {
        Some(v) => NullPolicy::parse(v)
            .ok_or_else(|| options.bad("null_policy", v, choice("null_policy")))?,
        None => NullPolicy::DeadLetter,
    };
    let defaults = ModelOptions::default();
    let memo = match options.get("memo") {
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "on" | "true" => true,
            "off" | "false" => false,
            _ => return Err(options.bad("memo", v, "'on' or 'off'")),
        },
        None => defaults.memo,
    };
    let timeout = match options.get("timeout") {
        Some(v) if v.trim().eq_ignore_ascii_case("none") => None,
        Some(_) => match options.get_duration("timeout")? {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(options.bad(
                    "timeout",
                    options.get("timeout").unwrap_or_default(),
                    choice("timeout"),
                ));
            }
        },
        None => defaults.timeout,
    };
    let run = ModelOptions {
        backend,
        device,
        threads: options.get_positive("threads")?.map(|n| n as usize),
        max_rows: options
            .get_positive("max_rows")?
            .map_or(defaults.max_rows, |n| n as usize),
        null_policy,
        memo,
        timeout,
        max_in_flight: options
            .get_positive("max_in_flight")?
            .map_or(defaults.max_in_flight, |n| n as usize),
    };
    Ok((run, options.get("dead_letter").map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_model_reads_as_a_table_declaration() {
        let sql = "-- scores\nCREATE MODEL fraud LOCATION 'm.onnx' OPTIONS ('threads' '2')";
        let rewritten = as_create_table(sql).unwrap();
        assert_eq!(
            rewritten,
            "-- scores\nCREATE EXTERNAL TABLE fraud STORED AS ONNX LOCATION 'm.onnx' OPTIONS ('threads' '2')"
        );
        let kept = as_create_table("create model \"Big\" stored as onnx location 'x'").unwrap();
        assert_eq!(
            kept,
            "create EXTERNAL TABLE \"Big\" stored as onnx location 'x'"
        );
        assert!(as_create_table("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x'").is_none());
        assert!(as_create_table("INSERT INTO model SELECT 1").is_none());
    }

    #[test]
    fn options_are_checked_and_named() {
        let at = StatementRef { index: 1, line: 1 };
        let opts = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let decl = model_decl(
            "fraud".into(),
            "ONNX",
            "m.onnx".into(),
            opts(&[
                ("device", "cuda"),
                ("max_rows", "64"),
                ("null_policy", "null"),
            ]),
            at,
        )
        .unwrap();
        assert_eq!(decl.options.backend, Backend::OnnxRuntime);
        assert_eq!(decl.options.max_rows, 64);
        assert_eq!(decl.options.null_policy, NullPolicy::Null);
        assert_eq!(
            decl.dead_letter_destination(),
            ".volley/dead_letters/model_fraud"
        );
        let err = model_decl(
            "fraud".into(),
            "ONNX",
            "m.onnx".into(),
            opts(&[("watermark", "ts")]),
            at,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("model 'fraud': unknown option 'watermark'"),
            "{err}"
        );
        let err = model_decl(
            "fraud".into(),
            "ONNX",
            "m.onnx".into(),
            opts(&[("backend", "tract"), ("device", "cuda")]),
            at,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'device'") && err.contains("onnxruntime"),
            "{err}"
        );
        let err = model_decl("fraud".into(), "PMML", "m".into(), opts(&[]), at)
            .unwrap_err()
            .to_string();
        assert!(err.contains("STORED AS ONNX"), "{err}");
    }

    #[test]
    fn memo_timeout_and_in_flight_options_are_read_and_checked() {
        let at = StatementRef { index: 2, line: 3 };
        let decl = |pairs: &[(&str, &str)]| {
            model_decl(
                "fraud".into(),
                "ONNX",
                "m.onnx".into(),
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
                at,
            )
        };
        let defaults = decl(&[]).unwrap().options;
        assert!(defaults.memo);
        assert_eq!(defaults.timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(defaults.max_in_flight, 2);
        let set = decl(&[
            ("memo", "OFF"),
            ("timeout", "250 ms"),
            ("max_in_flight", "5"),
        ])
        .unwrap()
        .options;
        assert!(!set.memo);
        assert_eq!(set.timeout, Some(std::time::Duration::from_millis(250)));
        assert_eq!(set.max_in_flight, 5);
        assert_eq!(decl(&[("timeout", "none")]).unwrap().options.timeout, None);
        for (option, value) in [
            ("memo", "sometimes"),
            ("timeout", "soon"),
            ("timeout", "0 ms"),
            ("max_in_flight", "0"),
        ] {
            let err = decl(&[(option, value)]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("model 'fraud': option '{option}' = '{value}'")),
                "{err}"
            );
        }
    }
}
