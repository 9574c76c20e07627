//! A pipeline's fingerprint: a stable hash of what its statements say, recorded in every
//! checkpoint so an operator can tell whether the SQL changed since a checkpoint was written.
//!
//! The fingerprint is informational: restore compatibility is decided per INSERT by the shape
//! of its state (see `QueryRunner::shape`), so a compatible edit (a new filter, a renamed
//! output column of a stateless INSERT) still restores, with a warning.

use volley_sql::Pipeline;

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

/// The canonical text of the pipeline: every table (name, kind, location, declared columns,
/// options sorted by name) and every INSERT (target and the query as the SQL parser prints it,
/// so whitespace and comments do not count).
pub fn canonical_text(pipeline: &Pipeline) -> String {
    let mut text = String::new();
    for table in &pipeline.tables {
        text.push_str(&format!(
            "TABLE {} {} '{}'",
            table.name, table.kind, table.location
        ));
        if let Some(schema) = &table.declared_schema {
            for field in schema.fields() {
                text.push_str(&format!(
                    " {}:{}:{}",
                    field.name(),
                    field.data_type(),
                    field.is_nullable()
                ));
            }
        }
        for (name, value) in table.options.iter() {
            text.push_str(&format!(" {name}={value}"));
        }
        text.push('\n');
    }
    for insert in &pipeline.inserts {
        text.push_str(&format!("INSERT {} {}\n", insert.target, insert.query));
    }
    text
}

/// The fingerprint of `pipeline`, as 16 hex digits.
pub fn fingerprint(pipeline: &Pipeline) -> String {
    format!(
        "{:016x}",
        fnv1a(canonical_text(pipeline).as_bytes(), FNV_OFFSET)
    )
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
