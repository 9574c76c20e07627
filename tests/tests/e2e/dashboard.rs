//! The dashboard in a real headless browser (Chromium): while a pipeline runs, the page draws
//! the plan as a graph and its charts take in new samples. Screenshots are left in the test
//! output directory (`CARGO_TARGET_TMPDIR`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Announced, volley_command};

const PIPELINE: &str = "
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('rate' '2000', 'pace' 'realtime', 'max_delay' '200 ms', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''1 second''');
CREATE EXTERNAL TABLE per_second STORED AS PARQUET LOCATION 'out/per_second'
OPTIONS ('merge_key' 'w, cell');
INSERT INTO per_second
SELECT date_bin(INTERVAL '1 second', event_time) AS w, geohash(lat, lon, 3) AS cell, count(*) AS n
FROM rides GROUP BY 1, 2;
";

/// Chromium, which `.ci/run` installs; `None` (skip) outside CI when there is none.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Command::new("which").arg(name).output())
        .filter_map(Result::ok)
        .find(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but Chromium is not installed: .ci/run installs it");
        }
        eprintln!(
            "Chromium is not installed: skipping the browser test (bash .ci/run installs it)"
        );
    }
    found
}

/// Runs headless Chromium over `url` for `budget` of page time: `extra` says what it writes.
fn browse(chromium: &Path, url: &str, extra: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,1100",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", home.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `data-<name>` on the page's body.
fn body_data(dom: &str, name: &str) -> Option<u64> {
    let at = dom.find(&format!("data-{name}=\""))? + name.len() + 7;
    dom[at..].split('"').next()?.parse().ok()
}

#[test]
fn the_dashboard_draws_the_plan_and_its_charts_move_while_the_pipeline_runs() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), PIPELINE).unwrap();
    let running = Announced::spawn(
        volley_command()
            .args(["run", "pipeline.sql", "--no-flight", "--no-checkpoint"])
            .current_dir(dir.path())
            .stdout(Stdio::null()),
        "volley: dashboard on ",
    );
    let url = running.addr.clone();

    // The page as a browser has it after a few seconds of polling, twice, two seconds apart.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let first = browse(&chromium, &url, &["--dump-dom"]);
    std::thread::sleep(Duration::from_secs(2));
    let second = browse(&chromium, &url, &["--dump-dom"]);
    for (i, name) in ["dashboard-1.png", "dashboard-2.png"].iter().enumerate() {
        let shot = shots.join(name);
        browse(
            &chromium,
            &url,
            &[&format!("--screenshot={}", shot.display())],
        );
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {i} is {size} bytes");
        eprintln!("dashboard screenshot: {} ({size} bytes)", shot.display());
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(running);

    for dom in [&first, &second] {
        // The plan: the source, the statement with its aggregate, the sink, and edges.
        assert!(dom.contains(r#"id="plan""#), "no plan graph drawn: {dom}");
        assert!(dom.contains("source: rides"), "{dom}");
        assert!(dom.contains("query: INSERT INTO per_second"), "{dom}");
        assert!(dom.contains("per_second#aggregate"), "{dom}");
        assert!(dom.contains("sink: per_second"), "{dom}");
        assert!(dom.matches("<line ").count() >= 2, "{dom}");
        // Six charts, each drawn by uPlot and fed several samples.
        assert_eq!(dom.matches(r#"class="uplot"#).count(), 6, "{dom}");
        let samples = body_data(dom, "samples").unwrap_or(0);
        assert!(samples >= 3, "only {samples} samples: {dom}");
        assert!(dom.contains("running"), "{dom}");
    }
    // The charts move: the later page read more rows.
    let (before, after) = (
        body_data(&first, "read-total").unwrap_or(0),
        body_data(&second, "read-total").unwrap_or(0),
    );
    assert!(
        before > 0 && after > before,
        "rows read {before} then {after}"
    );
}
