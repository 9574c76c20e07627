//! The everyday loop over Delta sinks, as Python `deltalake` reads them: `batch` beside a
//! streaming run is refused instead of appending a second copy, and `--from-scratch` leaves
//! each table holding the new run's rows alone (no epoch of the old run, no duplicate).

use std::path::Path;
use std::process::Command;

use crate::process::{volley_command, volley_ok};
use crate::readers::python;

/// Payments into an append sink (a filter) and a MERGE sink (a keyed aggregate), both Delta.
const SQL: &str = "
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '4000', 'rate' '200', 'seed' '9', 'disorder' '2 seconds', 'riders' '50',
         'watermark' 'event_time - INTERVAL ''3 seconds''', 'max_rows' '250');
CREATE EXTERNAL TABLE raw STORED AS DELTA LOCATION 'out/raw';
CREATE EXTERNAL TABLE per_user STORED AS DELTA LOCATION 'out/per_user'
OPTIONS ('merge_key' 'user_id');
INSERT INTO raw SELECT payment_id, user_id, amount, event_time FROM payments WHERE channel % 3 = 0;
INSERT INTO per_user SELECT user_id, count(*) AS n, max(amount) AS top FROM payments GROUP BY 1;";

/// Every row of the Delta table at `dir`, read by Python `deltalake`, as sorted text lines.
fn delta_rows(python: &Path, dir: &Path) -> Vec<String> {
    // deltalake's runtime threads can abort the interpreter's shutdown once the rows are out:
    // leave without it.
    let script = "import os, sys, deltalake
t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table()
rows = sorted(repr(tuple(r.values())) for r in t.to_pylist())
sys.stdout.write('\\n'.join(rows) + '\\n')
sys.stdout.flush()
os._exit(0)";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deltalake: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn batch_beside_a_run_is_refused_and_from_scratch_leaves_only_the_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    std::fs::write(here.join("p.sql"), SQL).unwrap();
    volley_ok(here, &["run", "p.sql", "--quiet", "--no-flight"]);

    // `batch` into the sinks the run wrote: refused, naming them.
    let out = volley_command()
        .args(["batch", "p.sql"])
        .current_dir(here)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("raw") && err.contains("per_user") && err.contains("--output"),
        "{err}"
    );

    // Edit the filter and start over: each table holds the edited pipeline's rows alone.
    std::fs::write(
        here.join("p.sql"),
        SQL.replace("channel % 3 = 0", "channel % 2 = 0"),
    )
    .unwrap();
    volley_ok(
        here,
        &["run", "p.sql", "--quiet", "--no-flight", "--from-scratch"],
    );
    volley_ok(here, &["batch", "p.sql", "--output", "expected"]);
    let Some(python) = python() else { return };
    for table in ["raw", "per_user"] {
        let ours = delta_rows(&python, &here.join("out").join(table));
        let expected = delta_rows(&python, &here.join("expected").join(table));
        assert!(!expected.is_empty(), "{table}: the batch wrote nothing");
        let distinct: std::collections::BTreeSet<&String> = ours.iter().collect();
        assert_eq!(distinct.len(), ours.len(), "{table}: duplicate rows");
        assert_eq!(ours, expected, "{table}");
    }
}
