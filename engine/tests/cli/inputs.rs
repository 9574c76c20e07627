//! Inputs as a user hands them over: missing files are errors, CSV options and bad records are
//! treated the same by `run`, `batch` and `verify`, and numbers become times only when the
//! table says what they count.

use std::path::Path;
use std::process::Output;

use super::volley;

fn sh(dir: &Path, args: &[&str]) -> Output {
    volley().args(args).current_dir(dir).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The run summary (stdout).
fn summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every line of the JSON-lines files under `dir` (dead letters), in file order.
fn letters(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = dir.read_dir() else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_missing_or_empty_input_is_an_error_naming_table_and_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rides (id BIGINT NOT NULL, ts TIMESTAMP NOT NULL)
         STORED AS CSV LOCATION 'nowhere/rides.csv' OPTIONS ('watermark' 'ts');
         CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out';
         INSERT INTO out SELECT id FROM rides;",
    )
    .unwrap();
    for args in [
        vec!["run", "p.sql", "--quiet"],
        vec!["batch", "p.sql"],
        vec!["verify", "p.sql"],
        vec!["batch", "p.sql", "--input", "rides=elsewhere.csv"],
    ] {
        let out = sh(dir.path(), &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("table 'rides'") && err.contains("matches no .csv file"),
            "{args:?}: {err}"
        );
        let path = if args.len() > 3 {
            "elsewhere.csv"
        } else {
            "nowhere/rides.csv"
        };
        assert!(err.contains(path), "{args:?}: {err}");
        assert!(!dir.path().join("out").exists(), "{args:?} wrote output");
    }
    std::fs::write(dir.path().join("empty.parquet"), b"").unwrap();
    let out = sh(
        dir.path(),
        &["batch", "p.sql", "--input", "rides=empty.parquet"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("empty.parquet") && err.contains("is empty (0 bytes)"),
        "{err}"
    );
}

/// 1,000 rows, `|`-separated, no header.
fn piped_csv(path: &Path) {
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!(
            "{i}|2026-01-01T00:{:02}:{:02}|{}.5\n",
            i / 60 % 60,
            i % 60,
            i % 7
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn csv_options_are_read_the_same_by_run_batch_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    piped_csv(&dir.path().join("rows.csv"));
    piped_csv(&dir.path().join("other.csv"));
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rows (id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, v DOUBLE)
         STORED AS CSV LOCATION 'rows.csv'
         OPTIONS ('has_header' 'false', 'delimiter' '|', 'watermark' 'ts - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE copy STORED AS PARQUET LOCATION 'out/copy';
         CREATE EXTERNAL TABLE per_minute STORED AS PARQUET LOCATION 'out/per_minute';
         INSERT INTO copy SELECT id, v FROM rows;
         INSERT INTO per_minute SELECT date_trunc('minute', ts) AS m, count(*) AS n, sum(v) AS total FROM rows GROUP BY 1;",
    )
    .unwrap();
    let run = sh(dir.path(), &["run", "p.sql", "--quiet", "--no-checkpoint"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        summary(&run).contains("copy: 1000 rows written"),
        "{}",
        summary(&run)
    );
    for args in [
        vec!["batch", "p.sql", "--overwrite"],
        vec!["batch", "p.sql", "--input", "rows=other.csv", "--overwrite"],
    ] {
        let out = sh(dir.path(), &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            summary(&out).contains("copy: 1000 rows written"),
            "{args:?}: {}",
            summary(&out)
        );
    }
    for args in [
        vec!["verify", "p.sql"],
        vec!["verify", "p.sql", "--input", "rows=other.csv"],
    ] {
        let out = sh(dir.path(), &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {stdout} {}", stderr(&out));
        assert!(
            stdout.contains("copy: 1000/1000 match"),
            "{args:?}: {stdout}"
        );
        assert!(
            stdout.contains("per_minute: 17/17 match"),
            "{args:?}: {stdout}"
        );
    }
}

#[test]
fn bad_records_in_files_are_dead_letters_and_the_pipeline_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,ts,v\n");
    let mut json = String::new();
    for i in 0..200 {
        let line = match i {
            17 => "17,2026-01-01T00:00:17".to_string(), // a field missing
            64 => "sixty-four,2026-01-01T00:01:04,1".to_string(), // not an integer
            150 => "150,\"2026-01-01T00:02:30,1".to_string(), // an open quote (to the end)
            _ => format!("{i},2026-01-01T00:{:02}:{:02},{i}", i / 60, i % 60),
        };
        csv.push_str(&line);
        csv.push('\n');
        json.push_str(&match i {
            3 => r#"{"id": "three", "ts": "2026-01-01T00:00:03Z", "v": 3}"#.to_string(),
            99 => r#"{"id": 99, "ts": "2026-01-01T00:01:39Z", "v": [9]}"#.to_string(),
            _ => format!(
                r#"{{"id": {i}, "ts": "2026-01-01T00:{:02}:{:02}Z", "v": {i}}}"#,
                i / 60,
                i % 60
            ),
        });
        json.push('\n');
    }
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/events.csv"), &csv).unwrap();
    std::fs::write(dir.path().join("in/events.json"), &json).unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE c (id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, v DOUBLE)
         STORED AS CSV LOCATION 'in/events.csv' OPTIONS ('max_rows' '32', 'dead_letter' 'letters/c');
         CREATE EXTERNAL TABLE j (id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, v DOUBLE)
         STORED AS JSON LOCATION 'in/events.json' OPTIONS ('max_rows' '32', 'dead_letter' 'letters/j');
         CREATE EXTERNAL TABLE c_out STORED AS PARQUET LOCATION 'out/c';
         CREATE EXTERNAL TABLE j_out STORED AS PARQUET LOCATION 'out/j';
         INSERT INTO c_out SELECT id, v FROM c;
         INSERT INTO j_out SELECT id, v FROM j;",
    )
    .unwrap();
    for round in 0..2 {
        // The second run restores the finished pipeline's checkpoint: it does not stop on
        // the bad records again.
        let run = sh(dir.path(), &["run", "p.sql", "--quiet"]);
        assert!(run.status.success(), "round {round}: {}", stderr(&run));
    }
    let run = sh(dir.path(), &["run", "p.sql", "--quiet", "--from-scratch"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let err = summary(&run);
    // 200 CSV records less three: the open quote sets aside its own line, and the lines
    // after it are read as records.
    assert!(
        err.contains("c_out: 197 rows written") && err.contains("j_out: 198 rows written"),
        "{err}"
    );
    assert!(
        err.contains("5 undecodable records sent to dead letters"),
        "{err}"
    );
    let c = letters(&dir.path().join("letters/c"));
    let lines: Vec<u64> = c
        .iter()
        .map(|l| l["row"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![19, 66, 152],
        "CSV lines (the header is line 1): {c:?}"
    );
    assert!(
        c.iter().all(|l| l["row"]["partition"]
            .as_str()
            .unwrap()
            .ends_with("in/events.csv")
            && !l["row"]["error"].as_str().unwrap().is_empty()),
        "{c:?}"
    );
    assert_eq!(c[1]["row"]["payload"], "sixty-four,2026-01-01T00:01:04,1");
    let open_quote = c[2]["row"]["error"].as_str().unwrap();
    assert!(
        open_quote.contains("unclosed quote")
            && open_quote.contains("line 152")
            && open_quote.contains("the 49 lines after it"),
        "{open_quote}"
    );
    let j = letters(&dir.path().join("letters/j"));
    let lines: Vec<u64> = j
        .iter()
        .map(|l| l["row"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![4, 100], "{j:?}");
    // Batch reads the same records the same way and writes the same letters as epoch 0.
    std::fs::remove_dir_all(dir.path().join("letters")).unwrap();
    let batch = sh(dir.path(), &["batch", "p.sql", "--overwrite"]);
    assert!(batch.status.success(), "{}", stderr(&batch));
    let err = summary(&batch);
    assert!(
        err.contains("c_out: 197 rows written") && err.contains("j_out: 198 rows written"),
        "{err}"
    );
    let c_batch = letters(&dir.path().join("letters/c"));
    assert_eq!(
        c_batch.iter().map(|l| &l["row"]).collect::<Vec<_>>(),
        c.iter().map(|l| &l["row"]).collect::<Vec<_>>()
    );
}

#[test]
fn epoch_milliseconds_become_times_only_with_a_declared_unit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("events.json"),
        "{\"id\": 1, \"ts\": 1767225600000}\n{\"id\": 2, \"ts\": 1767225660000}\n",
    )
    .unwrap();
    let pipeline = |unit: &str| {
        format!(
            "CREATE EXTERNAL TABLE e (id BIGINT NOT NULL, ts TIMESTAMP NOT NULL)
             STORED AS JSON LOCATION 'events.json' OPTIONS ('dead_letter' 'letters', 'max_dead_letters' '100%'{unit});
             CREATE EXTERNAL TABLE out STORED AS CSV LOCATION 'out';
             INSERT INTO out SELECT id, ts FROM e;"
        )
    };
    std::fs::write(dir.path().join("p.sql"), pipeline("")).unwrap();
    let run = sh(dir.path(), &["run", "p.sql", "--quiet", "--no-checkpoint"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let refused = letters(&dir.path().join("letters"));
    assert_eq!(refused.len(), 2, "no guessing: {refused:?}");
    assert!(
        refused[0]["row"]["error"]
            .as_str()
            .unwrap()
            .contains("'timestamp_unit'"),
        "{refused:?}"
    );
    std::fs::write(
        dir.path().join("p.sql"),
        pipeline(", 'timestamp_unit' 'ms'"),
    )
    .unwrap();
    let out = sh(dir.path(), &["batch", "p.sql"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text: String = dir
        .path()
        .join("out")
        .read_dir()
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert!(
        text.contains("1,2026-01-01T00:00:00") && text.contains("2,2026-01-01T00:01:00"),
        "{text}"
    );
    let again = sh(dir.path(), &["batch", "p.sql"]);
    assert!(
        stderr(&again).contains("already hold rows"),
        "a second batch never adds to the first's rows: {}",
        stderr(&again)
    );
    let bad = sh(dir.path(), &["batch", "p.sql", "--overwrite"]);
    assert!(bad.status.success(), "{}", stderr(&bad));
    std::fs::write(
        dir.path().join("p.sql"),
        pipeline(", 'timestamp_unit' 'days'"),
    )
    .unwrap();
    let out = sh(dir.path(), &["batch", "p.sql"]);
    assert!(
        stderr(&out).contains("option 'timestamp_unit' = 'days' is invalid"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_parquet_column_declared_a_lossy_type_is_an_error_naming_table_column_file_and_types() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array};
    use arrow::record_batch::RecordBatch;

    let dir = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ("amount", Arc::new(Float64Array::from(vec![871.47, 12.5]))),
    ])
    .unwrap();
    let file = std::fs::File::create(dir.path().join("p.parquet")).unwrap();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let pipeline = |amount: &str| {
        format!(
            "CREATE EXTERNAL TABLE payments (id BIGINT NOT NULL, amount {amount})
             STORED AS PARQUET LOCATION 'p.parquet';
             CREATE EXTERNAL TABLE out STORED AS CSV LOCATION 'out';
             INSERT INTO out SELECT id, amount FROM payments;"
        )
    };
    std::fs::write(dir.path().join("p.sql"), pipeline("BIGINT")).unwrap();
    for args in [
        vec!["run", "p.sql", "--quiet", "--no-checkpoint"],
        vec!["batch", "p.sql"],
        vec!["verify", "p.sql"],
    ] {
        let out = sh(dir.path(), &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("table 'payments': column 'amount' is DOUBLE in file 'p.parquet' but declared BIGINT; converting would lose data — declare it DOUBLE"),
            "{args:?}: {err}"
        );
        assert!(!dir.path().join("out").exists(), "{args:?} wrote output");
    }
    std::fs::write(dir.path().join("p.sql"), pipeline("DOUBLE")).unwrap();
    let out = sh(dir.path(), &["batch", "p.sql"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text: String = dir
        .path()
        .join("out")
        .read_dir()
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert!(
        text.contains("1,871.47") && text.contains("2,12.5"),
        "{text}"
    );
}
