//! Planner golden files: the `explain` output of every pipeline the project ships (examples,
//! Nexmark, frozen test pipelines) is checked in under `engine/tests/golden/`, so a planning
//! change shows its diff in review. `VOLLEY_BLESS=1` rewrites them.

use std::path::{Path, PathBuf};

use super::volley;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every shipped pipeline, relative to the repository root.
fn pipelines() -> Vec<PathBuf> {
    let root = root();
    let mut found = Vec::new();
    for dir in ["examples", "benches/nexmark", "tests/data"] {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "sql") {
                    found.push(path.strip_prefix(&root).unwrap().to_path_buf());
                }
            }
        }
    }
    found.sort();
    found
}

/// `examples/surge/pipeline.sql` → `examples-surge-pipeline.explain`.
fn golden_name(pipeline: &Path) -> String {
    let stem = pipeline.with_extension("");
    let parts: Vec<String> = stem
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    format!("{}.explain", parts.join("-"))
}

#[test]
fn explain_of_every_shipped_pipeline_matches_its_golden_file() {
    let root = root();
    let golden_dir = root.join("engine/tests/golden");
    let bless = std::env::var_os("VOLLEY_BLESS").is_some();
    let pipelines = pipelines();
    assert!(pipelines.len() >= 11, "{pipelines:?}");
    let mut differ = Vec::new();
    let mut names = Vec::new();
    for pipeline in &pipelines {
        let out = volley()
            .arg("explain")
            .arg(pipeline)
            // Partitions and shards follow the cores: plan for CI's two on every machine.
            .args(["--workers", "2"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "volley explain {}: {}",
            pipeline.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let name = golden_name(pipeline);
        let path = golden_dir.join(&name);
        names.push(name);
        if bless {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != text {
            let line = expected
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| expected.lines().count().min(text.lines().count()));
            differ.push(format!(
                "{} differs from {} at line {}:\n  golden: {}\n  now:    {}",
                pipeline.display(),
                path.display(),
                line + 1,
                expected.lines().nth(line).unwrap_or("<end>"),
                text.lines().nth(line).unwrap_or("<end>")
            ));
        }
    }
    // A golden file whose pipeline is gone is stale.
    if !bless {
        for entry in std::fs::read_dir(&golden_dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !names.contains(&name) {
                differ.push(format!("{name}: no shipped pipeline explains to it"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "plans changed (run with VOLLEY_BLESS=1 to accept, and review the diff):\n{}",
        differ.join("\n")
    );
}
