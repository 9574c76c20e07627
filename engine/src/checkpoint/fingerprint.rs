//! A pipeline's identity: its statements in a canonical form, recorded in every checkpoint so
//! a restore can tell whether the pipeline changed since, and say what changed.
//!
//! Options that never change what a pipeline writes (how micro-batches are cut, how much
//! memory sorting may use, where dead letters go, how many may go there, how long a live table
//! keeps rows) are left out of the identity: changing them keeps the checkpoint's state. Any
//! other change to a source, a sink, a model or a query makes the state another pipeline's, so
//! a restore refuses it.

use volley_sql::Pipeline;

/// Options that do not change what a pipeline writes.
pub const OPERATIONAL_OPTIONS: &[&str] = &[
    "max_rows",
    "max_delay",
    "sort_memory",
    "max_dead_letters",
    "dead_letter",
    "live_retention",
    "pace",
];

/// FNV-1a (64-bit): tiny, and the same on every platform and Rust version (unlike
/// `std`'s `DefaultHasher`).
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// The pipeline's statements in canonical form: every table (name, kind, location, declared
/// columns, options sorted by name), model and INSERT (the query as the SQL parser prints it,
/// so whitespace and comments do not count). With `operational`, options that do not change
/// results are included too.
pub fn statements(pipeline: &Pipeline, operational: bool) -> Vec<String> {
    let mut out = Vec::new();
    for table in &pipeline.tables {
        let mut text = format!("CREATE EXTERNAL TABLE {}", table.name);
        if let Some(schema) = &table.declared_schema {
            let columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|field| {
                    format!(
                        "{} {}{}",
                        field.name(),
                        field.data_type(),
                        if field.is_nullable() { "" } else { " NOT NULL" }
                    )
                })
                .collect();
            text.push_str(&format!(" ({})", columns.join(", ")));
        }
        text.push_str(&format!(
            " STORED AS {} LOCATION '{}'",
            table.kind.to_uppercase(),
            table.location
        ));
        let options: Vec<String> = table
            .options
            .iter()
            .filter(|(name, _)| operational || !OPERATIONAL_OPTIONS.contains(name))
            .map(|(name, value)| format!("'{name}' '{}'", value.replace('\'', "''")))
            .collect();
        if !options.is_empty() {
            text.push_str(&format!(" OPTIONS ({})", options.join(", ")));
        }
        out.push(text);
    }
    for model in &pipeline.models {
        out.push(format!(
            "CREATE MODEL {} LOCATION '{}'",
            model.name, model.location
        ));
    }
    for insert in &pipeline.inserts {
        out.push(format!("INSERT INTO {} {}", insert.target, insert.query));
    }
    out
}

/// The canonical text of the whole pipeline, operational options included.
pub fn canonical_text(pipeline: &Pipeline) -> String {
    statements(pipeline, true).join("\n")
}

/// The fingerprint of `pipeline` (every option counts), as 16 hex digits.
pub fn fingerprint(pipeline: &Pipeline) -> String {
    format!(
        "{:016x}",
        fnv1a(canonical_text(pipeline).as_bytes(), FNV_OFFSET)
    )
}

/// What differs between the statements a checkpoint recorded (`then`) and the pipeline's
/// (`now`), one line per statement: empty when they are the same.
pub fn changes(then: &[String], now: &[String]) -> Vec<String> {
    let gone = then
        .iter()
        .filter(|s| !now.contains(s))
        .map(|s| format!("the checkpoint's pipeline had: {s}"));
    let added = now
        .iter()
        .filter(|s| !then.contains(s))
        .map(|s| format!("this pipeline has: {s}"));
    let mut out: Vec<String> = gone.chain(added).collect();
    if out.is_empty() && then != now {
        out.push("the same statements in another order".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use volley_connectors::ConnectorRegistry;

    use super::*;

    async fn parse(sql: &str) -> Pipeline {
        Pipeline::parse(sql, &ConnectorRegistry::builtin())
            .await
            .unwrap()
    }

    const BASE: &str = "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides' OPTIONS ('count' '10', 'seed' '1');
CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO out SELECT rider_id FROM rides WHERE rider_id > 3;";

    #[tokio::test]
    async fn layout_does_not_count_but_meaning_does() {
        let base = fingerprint(&parse(BASE).await);
        let spaced = BASE.replace("SELECT rider_id", "SELECT   rider_id\n  -- the rider\n");
        assert_eq!(base, fingerprint(&parse(&spaced).await));
        let reordered_options =
            BASE.replace("('count' '10', 'seed' '1')", "('seed' '1', 'count' '10')");
        assert_eq!(base, fingerprint(&parse(&reordered_options).await));
        let identity = statements(&parse(BASE).await, false);
        let trigger = BASE.replace("'seed' '1'", "'seed' '1', 'max_rows' '7'");
        assert_ne!(base, fingerprint(&parse(&trigger).await));
        assert_eq!(identity, statements(&parse(&trigger).await, false));
        let filter = statements(&parse(&BASE.replace("> 3", "> 4")).await, false);
        let diff = changes(&identity, &filter);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].contains("rider_id > 3") && diff[1].contains("rider_id > 4"));
        assert!(changes(&identity, &identity).is_empty());
        for changed in [
            BASE.replace("> 3", "> 4"),
            BASE.replace("'seed' '1'", "'seed' '2'"),
            BASE.replace("LOCATION 'x'", "LOCATION 'y'"),
        ] {
            assert_ne!(base, fingerprint(&parse(&changed).await), "{changed}");
        }
        assert_eq!(base.len(), 16);
    }
}
