//! `volley`: run, batch, verify and explain streaming SQL pipelines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use volley_connectors::ConnectorRegistry;
use volley_engine::batch::{parse_binding, run_batch};
use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
use volley_engine::driver::BatchSizing;
use volley_engine::group::{GroupConfig, group_source, run_group};
use volley_engine::load_pipeline;
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_engine::verify::{InputOrder, VerifyOptions, verify};

/// mimalloc: a micro-batch allocates and frees many Arrow buffers, model tensors among them;
/// glibc's allocator spends a third of a small-batch `predict()` consolidating free chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Volley: the same SQL in batch and streaming, with provably equal results.
#[derive(Debug, Parser)]
#[command(name = "volley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline continuously (exits 0 once every bounded source is exhausted).
    Run {
        /// The pipeline `.sql` file.
        pipeline: PathBuf,
        /// No live status line on stderr.
        #[arg(long)]
        quiet: bool,
        /// Rows per micro-batch, overriding the sources' `max_rows`.
        #[arg(long)]
        max_rows: Option<usize>,
        /// Cores to spread each micro-batch over (default: all).
        #[arg(long)]
        workers: Option<usize>,
        /// Where checkpoints and the epoch log go: a directory or object-store URL
        /// (default: `.volley/checkpoints/<pipeline id>` in the working directory, where
        /// relative sink, dead-letter and input paths also resolve; without --pipeline-id,
        /// the file's name and a hash of its full path, so two pipeline files never share
        /// checkpoints).
        #[arg(long, value_name = "DIR_OR_URL")]
        checkpoint_dir: Option<String>,
        /// Checkpoint every N epochs, or at most once per duration (`10s`, `1m`); `auto`:
        /// every epoch, or at most once a second when a source's `max_delay` is under 100ms.
        #[arg(long, default_value = "auto", value_name = "auto|N|DURATION")]
        checkpoint_interval: String,
        /// How many checkpoints to keep.
        #[arg(long, default_value_t = 3)]
        keep_checkpoints: usize,
        /// Do not checkpoint (a restart then starts over).
        #[arg(long, conflicts_with = "from_scratch")]
        no_checkpoint: bool,
        /// Delete existing checkpoints, empty the sinks (Delta: a commit removing every row;
        /// files: the part files removed; refused for Kafka topics) and start over.
        #[arg(long)]
        from_scratch: bool,
        /// Names the pipeline: its checkpoints (`.volley/checkpoints/<id>`) and its writes to
        /// sinks such as Delta (default: the pipeline file's name).
        #[arg(long)]
        pipeline_id: Option<String>,
        #[command(flatten)]
        flight: volley_flight::server::FlightArgs,
        /// Do not serve Flight SQL.
        #[arg(long)]
        no_flight: bool,
        #[command(flatten)]
        http: volley_engine::metrics::HttpArgs,
    },
    /// Run the same statements once over bounded inputs, as a batch job.
    Batch {
        /// The pipeline `.sql` file.
        pipeline: PathBuf,
        /// Bind a source table to a bounded file: NAME=PATH (.parquet, .csv, .json).
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        /// Once the batch has run, serve its results (every sink with a `merge_key`) over
        /// Flight SQL until interrupted.
        #[arg(long)]
        serve: bool,
        /// Write every sink under DIR (`DIR/<table>`) instead of its LOCATION, leaving what a
        /// streaming run wrote alone.
        #[arg(long, value_name = "DIR")]
        output: Option<String>,
        /// Replace what the sinks hold (a sink holding rows is refused otherwise).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        flight: volley_flight::server::FlightArgs,
    },
    /// Run batch and streaming over the same input and compare every sink per key.
    Verify {
        /// The pipeline `.sql` file.
        pipeline: PathBuf,
        /// Bind a source table to a bounded file: NAME=PATH (.parquet, .csv, .json).
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        /// Seed for micro-batch sizes and the shuffle.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Smallest random micro-batch.
        #[arg(long, default_value_t = 1)]
        min_rows: usize,
        /// Largest random micro-batch.
        #[arg(long, default_value_t = 8192)]
        max_rows: usize,
        /// Feed rows sorted by event time instead of shuffled within the watermark bound.
        #[arg(long)]
        in_order: bool,
        /// Cores the streaming side spreads each micro-batch over (default: all).
        #[arg(long)]
        workers: Option<usize>,
        /// Also write the comparison as JSON to FILE (per sink: rows compared, matched, first
        /// differences; the verdict).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Accept a sink that receives no rows on either side (otherwise a comparison over
        /// nothing fails).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Print each INSERT's streaming plan.
    Explain {
        /// The pipeline `.sql` file.
        pipeline: PathBuf,
        /// Plan for this many cores (as `run --workers`; default: all).
        #[arg(long)]
        workers: Option<usize>,
    },
}

fn bindings(inputs: &[String]) -> anyhow::Result<HashMap<String, String>> {
    inputs
        .iter()
        .map(|i| parse_binding(i).map_err(anyhow::Error::from))
        .collect()
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let registry = ConnectorRegistry::builtin();
    match cli.command {
        Command::Run {
            pipeline,
            quiet,
            max_rows,
            workers,
            checkpoint_dir,
            checkpoint_interval,
            keep_checkpoints,
            no_checkpoint,
            from_scratch,
            pipeline_id,
            flight,
            no_flight,
            http,
        } => {
            let p = load_pipeline(&pipeline, &registry).await?;
            let _http = if http.no_http {
                None
            } else {
                let server = volley_engine::metrics::start_http(
                    &http,
                    volley_engine::metrics::Metrics::global(),
                )
                .await?;
                if !quiet {
                    let token = http.http_token.as_deref().is_some_and(|t| !t.is_empty());
                    eprintln!(
                        "volley: dashboard on http://{}/{}",
                        server.addr,
                        if token { "?token=<token>" } else { "" }
                    );
                    eprintln!(
                        "volley: Prometheus metrics on http://{}/metrics{}",
                        server.addr,
                        if token { ", token required" } else { "" }
                    );
                }
                Some(server)
            };
            let name = pipeline
                .file_stem()
                .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned());
            let checkpoint_name = match &pipeline_id {
                Some(id) => id.clone(),
                None => format!("{name}-{}", path_hash(&pipeline)),
            };
            let checkpoint = if no_checkpoint {
                None
            } else {
                Some(CheckpointConfig {
                    // Relative to the working directory, like every other path of a pipeline:
                    // run from elsewhere, it neither restores another directory's state nor
                    // skips writing this directory's sinks.
                    dir: checkpoint_dir.unwrap_or_else(|| {
                        std::path::Path::new(".volley")
                            .join("checkpoints")
                            .join(&checkpoint_name)
                            .to_string_lossy()
                            .into_owned()
                    }),
                    interval: CheckpointInterval::parse(&checkpoint_interval)?,
                    keep: keep_checkpoints,
                    from_scratch,
                })
            };
            let pipeline_id = pipeline_id.unwrap_or(name);
            let mut summary = if let Some(table) = group_source(&p)? {
                let checkpoint = checkpoint.ok_or_else(|| {
                    anyhow::anyhow!(
                        "table '{}' has option 'group' (group mode): its partitions move between processes through their checkpoints, so --no-checkpoint cannot be used",
                        table.name
                    )
                })?;
                let config = GroupConfig {
                    checkpoint,
                    pipeline_id,
                    workers,
                    sizing: max_rows.map(BatchSizing::Fixed),
                    verbose: !quiet,
                    flight: (!no_flight).then(|| flight.clone()),
                };
                run_group(&p, table, &registry, config)
                    .await
                    .context("pipeline failed")?
            } else {
                let overrides = JobOverrides {
                    status: !quiet,
                    sizing: max_rows.map(BatchSizing::Fixed),
                    workers,
                    pipeline_id: Some(pipeline_id),
                    checkpoint,
                    live: !no_flight,
                    ..JobOverrides::default()
                };
                let (mut job, _) = build_stream_job(&p, &registry, overrides).await?;
                let server = match job.live() {
                    Some(live) if !no_flight => Some(
                        volley_flight::server::start(
                            &flight,
                            live.published(),
                            &live.names().map(str::to_string).collect::<Vec<_>>(),
                            Some(volley_engine::metrics::Metrics::global()),
                            quiet,
                        )
                        .await?,
                    ),
                    _ => None,
                };
                job.prepare().await.context("pipeline failed")?;
                if let Some(restored) = &job.summary().restored {
                    announce(restored);
                }
                if !quiet {
                    eprintln!(
                        "volley: running; Ctrl-C stops after the current micro-batch, and a restart goes on from there"
                    );
                }
                let summary = job
                    .run_until(volley_engine::signals::stop_on_signals())
                    .await
                    .context("pipeline failed")?;
                if let Some(server) = server {
                    server.stop().await;
                }
                summary
            };
            // Every sink is named, also one that received nothing.
            for insert in &p.inserts {
                summary.rows_out.entry(insert.target.clone()).or_default();
            }
            // The run summary goes to stdout; status, logs and warnings to stderr.
            let mut text = String::new();
            for (sink, total) in &summary.rows_out {
                let rows = summary.rows_out_this_run(sink);
                match &summary.restored {
                    Some(_) => writeln!(
                        text,
                        "{sink}: {rows} rows written ({total} since the pipeline started, with the runs before this one)"
                    ),
                    None => writeln!(text, "{sink}: {rows} rows written"),
                }?;
            }
            if summary.late_rows > 0 {
                writeln!(text, "{} late rows sent to dead letters", summary.late_rows)?;
            }
            if summary.windows_corrected > 0 {
                writeln!(
                    text,
                    "{} windows corrected by late rows within allowed_lateness (emitted again as upserts)",
                    summary.windows_corrected
                )?;
            }
            if summary.groups_expired > 0 {
                writeln!(
                    text,
                    "{} groups forgotten by state_ttl",
                    summary.groups_expired
                )?;
            }
            if summary.rejected_records > 0 {
                writeln!(
                    text,
                    "{} undecodable records sent to dead letters",
                    summary.rejected_records
                )?;
            }
            if summary.rejected_by_models > 0 {
                writeln!(
                    text,
                    "{} rows left out by predict() (NULL inputs, model failures or timeouts) sent to dead letters",
                    summary.rejected_by_models
                )?;
            }
            for (name, stats) in &summary.models {
                writeln!(
                    text,
                    "model {}",
                    volley_engine::job::model_line(name, stats)
                )?;
            }
            if summary.memo_epochs > 0 {
                writeln!(
                    text,
                    "inference memo: {} epochs, {} bytes ({} per epoch)",
                    summary.memo_epochs,
                    summary.memo_bytes,
                    summary.memo_bytes / summary.memo_epochs
                )?;
            }
            if summary.checkpoints > 0 {
                writeln!(
                    text,
                    "{} checkpoints written; the last: epoch {}, {} ms, {} bytes",
                    summary.checkpoints,
                    summary.last_checkpoint_epoch,
                    summary.last_checkpoint_ms,
                    summary.last_checkpoint_bytes
                )?;
            }
            if summary.epochs_replayed > 0 || summary.rows_skipped > 0 {
                writeln!(
                    text,
                    "recovery: {} logged epochs re-read, {} rows not re-written (their sink had already committed them)",
                    summary.epochs_replayed, summary.rows_skipped
                )?;
            }
            print_stdout(&text)?;
            if let Some(warning) = summary.nothing_written_warning() {
                eprintln!("volley: warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Batch {
            pipeline,
            inputs,
            serve,
            flight,
            output,
            overwrite,
        } => {
            let p = load_pipeline(&pipeline, &registry).await?;
            let mut live = volley_connectors::live::LiveTables::new();
            let written = run_batch(
                &p,
                &bindings(&inputs)?,
                &registry,
                HashMap::new(),
                serve.then_some(&mut live),
                &volley_engine::batch::BatchOutput {
                    dir: output,
                    overwrite,
                },
            )
            .await?;
            let mut text = String::new();
            for (sink, rows) in written {
                writeln!(text, "{sink}: {rows} rows written")?;
            }
            print_stdout(&text)?;
            if serve {
                let names: Vec<String> = live.names().map(str::to_string).collect();
                if names.is_empty() {
                    anyhow::bail!(
                        "--serve: no sink has a 'merge_key', so there is no table to serve (a sink is served as the latest row per merge_key)"
                    );
                }
                let server =
                    volley_flight::server::start(&flight, live.published(), &names, None, false)
                        .await?;
                eprintln!("volley: serving the batch's results until interrupted (Ctrl-C)");
                let mut stop = volley_engine::signals::stop_on_signals();
                while !*stop.borrow() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                server.stop().await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            pipeline,
            inputs,
            seed,
            min_rows,
            max_rows,
            in_order,
            workers,
            report: report_file,
            allow_empty,
        } => {
            let p = load_pipeline(&pipeline, &registry).await?;
            let opts = VerifyOptions {
                sizing: BatchSizing::Random {
                    min: min_rows.max(1),
                    max: max_rows.max(min_rows.max(1)),
                    seed,
                },
                order: if in_order {
                    InputOrder::InOrder
                } else {
                    InputOrder::Shuffled
                },
                seed,
                max_differences: 10,
                workers,
            };
            let reports = verify(&p, &bindings(&inputs)?, &registry, &opts).await?;
            let mut text = String::new();
            let mut failures = Vec::new();
            for report in &reports {
                writeln!(text, "streaming {}:", report.pass)?;
                for sink in &report.sinks {
                    let key = if sink.key.is_empty() {
                        "whole rows".to_string()
                    } else {
                        sink.key.join(", ")
                    };
                    writeln!(
                        text,
                        "  {}: {}/{} match ({:.4}%) by key [{key}]",
                        sink.sink,
                        sink.matched,
                        sink.total,
                        100.0 * sink.match_rate()
                    )?;
                    for diff in &sink.differences {
                        writeln!(text, "    differs: {diff}")?;
                    }
                }
                for (name, source) in &report.sources {
                    writeln!(
                        text,
                        "  source {name}: {} records, {} undecodable, {} late",
                        source.records,
                        source.undecodable,
                        source.late_rows()
                    )?;
                }
                let failed = report.failures(allow_empty);
                writeln!(
                    text,
                    "  match rate: {:.4}%{}",
                    100.0 * report.match_rate(),
                    if failed.is_empty() { "" } else { " (FAIL)" }
                )?;
                failures.extend(failed);
            }
            let (matched, total) = reports
                .iter()
                .flat_map(|r| &r.sinks)
                .fold((0, 0), |(m, t), s| (m + s.matched, t + s.total));
            writeln!(
                text,
                "overall match rate: {:.4}%",
                if total == 0 {
                    100.0
                } else {
                    100.0 * matched as f64 / total as f64
                }
            )?;
            for failure in &failures {
                writeln!(text, "FAIL {failure}")?;
            }
            print_stdout(&text)?;
            if let Some(file) = report_file {
                let json = serde_json::json!({
                    "pass": failures.is_empty(),
                    "runs": reports.iter().map(|r| r.to_json(allow_empty)).collect::<Vec<_>>(),
                });
                let json = serde_json::to_string_pretty(&json)?;
                std::fs::write(&file, json + "\n")
                    .with_context(|| format!("cannot write --report '{}'", file.display()))?;
            }
            Ok(if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Explain { pipeline, workers } => {
            let p = load_pipeline(&pipeline, &registry).await?;
            let overrides = JobOverrides {
                no_sinks: true,
                workers,
                ..JobOverrides::default()
            };
            let (_, plans) = build_stream_job(&p, &registry, overrides).await?;
            let models = volley_engine::models::load_models(&p)?;
            let mut text = String::new();
            for decl in &p.models {
                if let Some(model) = models.get(&decl.name) {
                    writeln!(
                        text,
                        "MODEL {}  ({})\n  file: {}\n  sha256: {}\n  input: {} {:?}; returns {}\n  backend {}, device {}, max_rows {}, null_policy {}\n",
                        decl.name,
                        decl.at,
                        decl.location,
                        model.sha256(),
                        model.input().name,
                        model.input().shape,
                        model.return_type(),
                        model.backend().name(),
                        model.device().name(),
                        decl.options.max_rows,
                        decl.options.null_policy.name(),
                    )?;
                }
            }
            for plan in &plans {
                let explained = volley_sql::stream::explain::explain_query(plan, &|source| {
                    p.table(source)
                        .and_then(|t| t.options.get("watermark").map(str::to_string))
                });
                writeln!(text, "{explained}")?;
            }
            print_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Eight hex digits of the pipeline file's full path: two files of one name (`a/pipeline.sql`,
/// `b/pipeline.sql`) get checkpoints of their own.
fn path_hash(pipeline: &std::path::Path) -> String {
    let full = std::fs::canonicalize(pipeline).unwrap_or_else(|_| pipeline.to_path_buf());
    let mut hash: u32 = 0x811C_9DC5;
    for byte in full.to_string_lossy().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// Writes `text` to stdout. A reader that stops early (`volley explain p.sql | head -1`) is not
/// an error: the rest was not wanted.
fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

/// Says which checkpoint a run starts from, and when it has nothing left to do.
fn announce(restored: &volley_engine::runtime::Restored) {
    eprintln!(
        "volley: restored checkpoint of epoch {} from {} ({} rows read before this run{})",
        restored.epoch,
        restored.dir,
        restored.rows_in,
        if restored.replaying > 0 {
            format!("; re-reading {} logged epochs after it", restored.replaying)
        } else {
            String::new()
        }
    );
    if restored.finished && restored.replaying == 0 {
        eprintln!(
            "volley: the pipeline had already read every source to its end at that checkpoint: nothing is left to do. Run with --from-scratch to run it again"
        );
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOLLEY_LOG")
                // deltalake reports commit conflicts the Delta sink resolves by retrying, and
                // per-MERGE metric notes: not a user's concern unless the sink fails.
                .unwrap_or_else(|_| {
                    "warn,deltalake_core=error,deltalake_core::kernel::transaction=off".into()
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("volley: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("volley: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
