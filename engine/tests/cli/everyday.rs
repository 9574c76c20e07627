//! The everyday loop of a user with historical files: run, batch beside it, verify, edit and
//! run again, start over, delete the output: every outcome the new pipeline's answer or a
//! refusal naming why, never a quiet wrong answer.

use std::path::Path;
use std::process::Output;

use volley_connectors::files::{FileFormat, read_sink_dir};

use super::volley;

fn sh(dir: &Path, args: &[&str]) -> Output {
    volley().args(args).current_dir(dir).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Payments of 40 users over two hours, the file sorted by user then time (so far from event
/// time order): NULL and NaN amounts, ±0, duplicate times, rows on window edges.
fn payments_by_user(path: &Path) {
    let mut text = String::from("user_id,amount,ts\n");
    let mut state: u64 = 42;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut rows: Vec<(u64, String, u64)> = (0..4000)
        .map(|i| {
            let user = next() % 40;
            // Every 7th row sits exactly on a 5-minute edge.
            let second = if i % 7 == 0 {
                (next() % 24) * 300
            } else {
                next() % 7200
            };
            let amount = match next() % 23 {
                0 => String::new(),
                1 => "NaN".to_string(),
                2 => "-0.0".to_string(),
                _ => format!("{}.{:02}", next() % 900, next() % 100),
            };
            (user, amount, second)
        })
        .collect();
    rows.sort_by_key(|(user, _, second)| (*user, *second));
    for (user, amount, second) in rows {
        text.push_str(&format!(
            "{user},{amount},2026-03-01T{:02}:{:02}:{:02}\n",
            second / 3600,
            second / 60 % 60,
            second % 60
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn pipeline(extra_options: &str, filter: &str, sink: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE payments (user_id BIGINT NOT NULL, amount DOUBLE, ts TIMESTAMP NOT NULL)
           STORED AS CSV LOCATION 'payments.csv'
           OPTIONS ('watermark' 'ts - INTERVAL ''30 seconds''', 'max_rows' '97'{extra_options});
         CREATE EXTERNAL TABLE per_user STORED AS PARQUET LOCATION '{sink}';
         INSERT INTO per_user
         SELECT user_id, date_bin(INTERVAL '5 minutes', ts) AS w, count(*) AS n, round(sum(amount), 6) AS total
         FROM payments WHERE {filter} GROUP BY 1, 2;"
    )
}

/// A sink directory's rows as sorted lines, to compare runs.
fn rows(dir: &Path, location: &str) -> Vec<String> {
    let path = dir.join(location);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let batches = runtime
        .block_on(read_sink_dir(path.to_str().unwrap(), FileFormat::Parquet))
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("user_id"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn history_sorted_by_user_gives_the_batch_answer_and_file_order_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    payments_by_user(&here.join("payments.csv"));
    std::fs::write(here.join("p.sql"), pipeline("", "true", "out/per_user")).unwrap();

    let run = sh(here, &["run", "p.sql", "--quiet", "--no-flight"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!stdout(&run).contains("late rows"), "{}", stdout(&run));
    let streamed = rows(here, "out/per_user");
    assert!(streamed.len() > 500, "{}", streamed.len());

    // batch beside it: never into the sink the run wrote.
    let beside = sh(here, &["batch", "p.sql"]);
    assert_eq!(beside.status.code(), Some(2), "{}", stderr(&beside));
    assert!(
        stderr(&beside).contains("per_user") && stderr(&beside).contains("--output"),
        "{}",
        stderr(&beside)
    );
    assert_eq!(
        rows(here, "out/per_user"),
        streamed,
        "the refused batch wrote nothing"
    );
    let batch = sh(here, &["batch", "p.sql", "--output", "batch_out"]);
    assert!(batch.status.success(), "{}", stderr(&batch));
    assert_eq!(
        rows(here, "batch_out/per_user"),
        streamed,
        "run equals batch"
    );
    // --overwrite replaces, it does not add.
    let again = sh(
        here,
        &["batch", "p.sql", "--output", "batch_out", "--overwrite"],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(rows(here, "batch_out/per_user"), streamed);

    let verify = sh(here, &["verify", "p.sql"]);
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    assert!(stdout(&verify).contains("in the order `run` reads each source"));

    // In the file's order, most rows are behind the watermark: a loud failure, not exit 0.
    std::fs::write(
        here.join("file_order.sql"),
        pipeline(", 'replay_order' 'file'", "true", "out/file_order"),
    )
    .unwrap();
    let run = sh(here, &["run", "file_order.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source 'payments'")
            && err.contains("late")
            && err.contains("max_dead_letters"),
        "{err}"
    );
    let verify = sh(here, &["verify", "file_order.sql"]);
    assert_eq!(verify.status.code(), Some(1), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("late in streaming"),
        "{}",
        stdout(&verify)
    );
}

#[test]
fn edits_deleted_output_and_sibling_pipelines_never_end_in_a_quiet_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    payments_by_user(&here.join("payments.csv"));
    for (folder, filter) in [("a", "user_id < 20"), ("b", "user_id >= 20")] {
        std::fs::create_dir_all(here.join(folder)).unwrap();
        std::fs::write(
            here.join(folder).join("pipeline.sql"),
            pipeline("", filter, &format!("out/{folder}")),
        )
        .unwrap();
    }
    // Two files of one name, run from one directory: each has its own checkpoints.
    for folder in ["a", "b"] {
        let pipeline = format!("{folder}/pipeline.sql");
        let run = sh(here, &["run", &pipeline, "--quiet", "--no-flight"]);
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(!stderr(&run).contains("nothing is left to do"));
        assert!(!rows(here, &format!("out/{folder}")).is_empty(), "{folder}");
    }

    // Edit the filter: refused, naming the change.
    std::fs::write(
        here.join("a/pipeline.sql"),
        pipeline("", "user_id < 10", "out/a"),
    )
    .unwrap();
    let run = sh(here, &["run", "a/pipeline.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("belongs to another pipeline")
            && err.contains("user_id < 10")
            && err.contains("user_id < 20")
            && err.contains("--from-scratch"),
        "{err}"
    );
    // Starting over starts over: the sink holds the new pipeline's rows only.
    let run = sh(
        here,
        &[
            "run",
            "a/pipeline.sql",
            "--quiet",
            "--no-flight",
            "--from-scratch",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let batch = sh(here, &["batch", "a/pipeline.sql", "--output", "expected_a"]);
    assert!(batch.status.success(), "{}", stderr(&batch));
    assert_eq!(
        rows(here, "out/a"),
        rows(here, "expected_a/per_user"),
        "after --from-scratch the sink holds the edited pipeline's answer alone"
    );

    // An option that does not change results keeps the state.
    std::fs::write(
        here.join("a/pipeline.sql"),
        pipeline("", "user_id < 10", "out/a").replace("'max_rows' '97'", "'max_rows' '500'"),
    )
    .unwrap();
    let run = sh(here, &["run", "a/pipeline.sql", "--quiet", "--no-flight"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("nothing is left to do"),
        "{}",
        stderr(&run)
    );

    // Deleted output, the same pipeline again: refused, naming the sink.
    std::fs::remove_dir_all(here.join("out/a")).unwrap();
    let run = sh(here, &["run", "a/pipeline.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sink 'per_user'") && err.contains("--from-scratch"),
        "{err}"
    );
    let run = sh(
        here,
        &[
            "run",
            "a/pipeline.sql",
            "--quiet",
            "--no-flight",
            "--from-scratch",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(rows(here, "out/a"), rows(here, "expected_a/per_user"));
}

#[test]
fn a_source_whose_records_are_all_rejected_fails_run_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    let mut text = String::from("user_id,amount,ts\n");
    for i in 0..500u64 {
        text.push_str(&format!(
            "{},{}.5,{}\n",
            i % 7,
            i,
            1_772_323_200_000 + i * 1000
        ));
    }
    std::fs::write(here.join("payments.csv"), text).unwrap();
    std::fs::write(here.join("p.sql"), pipeline("", "true", "out/per_user")).unwrap();
    let run = sh(here, &["run", "p.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source 'payments' sent 500 of its 500 records")
            && err.contains("undecodable")
            && err.contains("timestamp_unit"),
        "{err}"
    );
    let batch = sh(here, &["batch", "p.sql", "--output", "b"]);
    let err = stderr(&batch);
    assert_eq!(batch.status.code(), Some(2), "{err}");
    assert!(err.contains("source 'payments' sent 500"), "{err}");
    // A declared tolerance lets it through.
    std::fs::write(
        here.join("lenient.sql"),
        pipeline(", 'max_dead_letters' '100%'", "true", "out/lenient"),
    )
    .unwrap();
    let run = sh(here, &["run", "lenient.sql", "--quiet", "--no-flight"]);
    assert!(run.status.success(), "{}", stderr(&run));
}

#[test]
fn a_run_whose_sink_receives_nothing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    payments_by_user(&here.join("payments.csv"));
    std::fs::write(
        here.join("p.sql"),
        pipeline("", "user_id > 1000", "out/per_user"),
    )
    .unwrap();
    let run = sh(here, &["run", "p.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(
        stdout(&run).contains("per_user: 0 rows written")
            && err.contains("4000 rows were read but no sink received a row (per_user)"),
        "{err}"
    );
    // A pipeline that writes rows says nothing of the kind.
    std::fs::write(here.join("q.sql"), pipeline("", "true", "out/all")).unwrap();
    let run = sh(here, &["run", "q.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(!err.contains("no sink received"), "{err}");
}

#[test]
fn limits_over_a_stream_are_refused_and_an_unclosed_quote_swallows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    payments_by_user(&here.join("payments.csv"));
    let head = "CREATE EXTERNAL TABLE payments (user_id BIGINT NOT NULL, amount DOUBLE, ts TIMESTAMP NOT NULL)
           STORED AS CSV LOCATION 'payments.csv' OPTIONS ('watermark' 'ts - INTERVAL ''30 seconds''');
         CREATE EXTERNAL TABLE top STORED AS PARQUET LOCATION 'out/top';";
    for (query, clause) in [
        (
            "SELECT user_id, amount FROM payments ORDER BY amount DESC LIMIT 5",
            "ORDER BY amount DESC LIMIT 5 over a stream",
        ),
        (
            "SELECT user_id, amount FROM (SELECT * FROM payments LIMIT 1000) t",
            "LIMIT 1000 over a stream",
        ),
    ] {
        std::fs::write(
            here.join("limit.sql"),
            format!("{head} INSERT INTO top {query};"),
        )
        .unwrap();
        let run = sh(here, &["run", "limit.sql", "--quiet", "--no-flight"]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{query}: {err}");
        assert!(
            err.contains(clause) && err.contains("volley batch"),
            "{query}: {err}"
        );
        assert!(!here.join("out/top").exists(), "{query}: wrote rows");
    }

    // One unclosed quote on line 3: that line is set aside, naming it and the lines it would
    // have swallowed; every line after it is read.
    let mut text =
        String::from("user_id,amount,ts\n1,2.5,2026-03-01T00:00:01\n2,\"7,2026-03-01T00:00:02\n");
    for i in 0..40 {
        text.push_str(&format!("{},{i}.5,2026-03-01T00:00:{:02}\n", i % 4, i + 3));
    }
    std::fs::write(here.join("quoted.csv"), text).unwrap();
    std::fs::write(
        here.join("quoted.sql"),
        "CREATE EXTERNAL TABLE payments (user_id BIGINT NOT NULL, amount DOUBLE, ts TIMESTAMP NOT NULL)
           STORED AS CSV LOCATION 'quoted.csv'
           OPTIONS ('watermark' 'ts - INTERVAL ''30 seconds''', 'dead_letter' 'letters');
         CREATE EXTERNAL TABLE copy STORED AS PARQUET LOCATION 'out/copy';
         INSERT INTO copy SELECT user_id, amount, ts FROM payments;",
    )
    .unwrap();
    let run = sh(here, &["run", "quoted.sql", "--quiet", "--no-flight"]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    let told = stdout(&run);
    assert!(
        told.contains("copy: 41 rows written") && told.contains("1 undecodable records"),
        "{told}"
    );
    let letters = std::fs::read_dir(here.join("letters"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        letters.contains("line 3") && letters.contains("swallow the 40 lines"),
        "{letters}"
    );
}
