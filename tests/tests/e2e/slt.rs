//! Runs `tests/slt/*.slt`. `statement` lines declare tables (validated as `volley` would);
//! `query` lines run the SELECT as a streaming pipeline (random micro-batches, rows shuffled
//! within the watermark) AND as a batch query, fail unless the two agree, and return the rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use volley_connectors::ConnectorRegistry;
use volley_engine::batch::{batch_outputs, read_sources};
use volley_engine::driver::BatchSizing;
use volley_engine::setup::plan_inserts;
use volley_engine::sink_fit::updates;
use volley_engine::verify::{InputOrder, VerifyOptions, compare_outputs, stream_outputs};
use volley_sql::{Pipeline, StatementRef};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct VolleyDb {
    pipeline: Pipeline,
    registry: ConnectorRegistry,
    statements: usize,
    /// The streaming plan of every query that ran, as `explain` shows it.
    explains: Arc<Mutex<String>>,
}

impl VolleyDb {
    fn new(explains: Arc<Mutex<String>>) -> Self {
        Self {
            explains,
            pipeline: Pipeline {
                tables: Vec::new(),
                inserts: Vec::new(),
                models: Vec::new(),
            },
            registry: ConnectorRegistry::builtin(),
            statements: 0,
        }
    }

    /// The pipeline so far plus `INSERT INTO __result <sql>` into a BLACKHOLE sink.
    async fn with_result(
        &self,
        sql: &str,
        options: &str,
        at: StatementRef,
    ) -> Result<Pipeline, SltError> {
        let err = |e: &dyn std::fmt::Display| SltError(e.to_string());
        let mut p = self.pipeline.clone();
        p.add_statement(
            &format!("CREATE EXTERNAL TABLE __result STORED AS BLACKHOLE LOCATION 'x' {options}"),
            at,
            &self.registry,
        )
        .await
        .map_err(|e| err(&e))?;
        p.add_statement(&format!("INSERT INTO __result {sql}"), at, &self.registry)
            .await
            .map_err(|e| err(&e))?;
        Ok(p)
    }

    async fn query(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let err = |e: &dyn std::fmt::Display| SltError(e.to_string());
        let at = StatementRef {
            index: self.statements,
            line: 0,
        };
        // An updating result (GROUP BY without a window) goes to a sink keyed by its groups.
        let mut p = self.with_result(sql, "", at).await?;
        let plans = plan_inserts(&p, &self.registry)
            .await
            .map_err(|e| err(&e))?;
        if let Some(plan) = plans.iter().find(|p| updates(p)) {
            let options = format!("OPTIONS ('merge_key' '{}')", plan.key_columns.join(", "));
            p = self.with_result(sql, &options, at).await?;
        }
        let rows = read_sources(&p, &HashMap::new(), &self.registry)
            .await
            .map_err(|e| err(&e))?;
        let batch = batch_outputs(&p, &rows).await.map_err(|e| err(&e))?;
        let opts = VerifyOptions {
            sizing: BatchSizing::Random {
                min: 1,
                max: 5,
                seed: 3,
            },
            order: InputOrder::Shuffled,
            seed: 3,
            max_differences: 5,
            workers: Some(3),
        };
        let (stream, plans) = stream_outputs(&p, &self.registry, &rows, &opts)
            .await
            .map_err(|e| err(&e))?;
        let report = compare_outputs(&p, &plans, &batch, &stream, 5).map_err(|e| err(&e))?;
        if let Some(plan) = plans.iter().find(|q| q.target == "__result") {
            let explained = volley_sql::stream::explain::explain_query(plan, &|source| {
                p.table(source)
                    .and_then(|t| t.options.get("watermark").map(str::to_string))
            });
            let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut explains = self.explains.lock().unwrap();
            explains.push_str(&format!("-- {one_line}\n{explained}\n"));
        }
        if !report.is_exact() {
            return Err(SltError(format!(
                "streaming and batch differ: {:?}",
                report.sinks
            )));
        }
        let out = batch.get("__result").cloned().unwrap_or_default();
        let columns = plans.first().map_or(0, |p| p.output_schema.fields().len());
        let mut text_rows = Vec::new();
        for b in &out {
            for i in 0..b.num_rows() {
                let row = b
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(i) {
                            "NULL".to_string()
                        } else {
                            match arrow::util::display::array_value_to_string(c, i) {
                                Ok(s) if s.is_empty() => "(empty)".to_string(),
                                // Whole floats print as integers, as in DataFusion's own .slt files.
                                Ok(s) if c.data_type().is_floating() && s.ends_with(".0") => {
                                    s.trim_end_matches(".0").to_string()
                                }
                                Ok(s) => s,
                                Err(e) => format!("<{e}>"),
                            }
                        }
                    })
                    .collect();
                text_rows.push(row);
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows: text_rows,
        })
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for VolleyDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        self.statements += 1;
        let head = sql.trim_start().to_ascii_uppercase();
        if head.starts_with("SELECT") || head.starts_with("WITH") {
            return self.query(sql).await;
        }
        let at = StatementRef {
            index: self.statements,
            line: 0,
        };
        if head.starts_with("INSERT") {
            // An INSERT is planned as `volley run` would (sink checks included), then set
            // aside: queries are what the files compare.
            let mut p = self.pipeline.clone();
            p.add_statement(sql, at, &self.registry)
                .await
                .map_err(|e| SltError(e.to_string()))?;
            let overrides = volley_engine::setup::JobOverrides {
                no_sinks: true,
                workers: Some(1),
                ..volley_engine::setup::JobOverrides::default()
            };
            volley_engine::setup::build_stream_job(&p, &self.registry, overrides)
                .await
                .map_err(|e| SltError(e.to_string()))?;
            return Ok(DBOutput::StatementComplete(0));
        }
        self.pipeline
            .add_statement(sql, at, &self.registry)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        Ok(DBOutput::StatementComplete(0))
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected .slt files in {}", dir.display());
    let bless = std::env::var_os("VOLLEY_BLESS").is_some();
    let mut differ = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "slt"))
    {
        let explains = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&explains);
        let mut runner = sqllogictest::Runner::new(move || {
            let shared = Arc::clone(&shared);
            async move { Ok(VolleyDb::new(shared)) }
        });
        runner
            .run_file_async(file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // The plans are golden too: a planning change shows its diff in review.
        let text = explains.lock().unwrap().clone();
        let golden = file.with_extension("explain");
        if bless {
            std::fs::write(&golden, &text).unwrap();
        } else if std::fs::read_to_string(&golden).unwrap_or_default() != text {
            differ.push(golden.display().to_string());
        }
    }
    assert!(
        differ.is_empty(),
        "plans changed (run with VOLLEY_BLESS=1 to accept, and review the diff): {differ:?}"
    );
}
