//! The live table against a plain map of the latest row per key, over random upserts.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::LiveTable;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user", DataType::Int64, true),
        Field::new("cell", DataType::Utf8, true),
        Field::new("v", DataType::Float64, true),
    ]))
}

type Key = (Option<i64>, Option<String>);
/// `v` as bits, so NaN and -0.0 compare exactly.
type Value = Option<u64>;

fn batch(rows: &[(Key, Option<f64>)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(rows.iter().map(|r| r.0.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.0.1.clone()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>()),
        ],
    )
    .unwrap()
}

fn contents(batches: &[RecordBatch]) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for b in batches {
        let u = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let c = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            let key = (
                (!u.is_null(i)).then(|| u.value(i)),
                (!c.is_null(i)).then(|| c.value(i).to_string()),
            );
            let value = (!v.is_null(i)).then(|| v.value(i).to_bits());
            assert!(out.insert(key.clone(), value).is_none(), "{key:?} twice");
        }
    }
    out
}

fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    *state >> 33
}

#[test]
fn holds_the_latest_row_per_key_whatever_the_batches() {
    for seed in 1..=20u64 {
        let mut rng = seed;
        let mut table = LiveTable::new("t", schema(), &["user".into(), "cell".into()]).unwrap();
        let mut model: BTreeMap<Key, Value> = BTreeMap::new();
        let mut held = Vec::new();
        for _ in 0..60 {
            let n = (next(&mut rng) % 200) as usize;
            let rows: Vec<(Key, Option<f64>)> = (0..n)
                .map(|_| {
                    // Hot keys, NULL in each key column, NaN / -0.0 / NULL values.
                    let user = match next(&mut rng) % 10 {
                        0 => None,
                        1..=4 => Some(7),
                        r => Some((r * 1000 + next(&mut rng) % 50) as i64),
                    };
                    let cell = match next(&mut rng) % 6 {
                        0 => None,
                        r => Some(format!("c{r}")),
                    };
                    let v = match next(&mut rng) % 8 {
                        0 => None,
                        1 => Some(f64::NAN),
                        2 => Some(-0.0),
                        r => Some(r as f64 * 1.5),
                    };
                    ((user, cell), v)
                })
                .collect();
            for (k, v) in &rows {
                model.insert(k.clone(), v.map(f64::to_bits));
            }
            table.apply(&batch(&rows)).unwrap();
            let snapshot = table.snapshot().unwrap();
            assert_eq!(contents(&snapshot), model, "seed {seed}");
            assert_eq!(table.len(), model.len());
            held.push((snapshot, model.clone()));
        }
        // Most rows died along the way: chunks were compacted, not kept one per batch.
        assert!(
            table.snapshot().unwrap().len() < 30,
            "seed {seed}: not compacted"
        );
        // Snapshots taken earlier still show their epoch.
        for (snapshot, then) in held {
            assert_eq!(contents(&snapshot), then, "seed {seed}");
        }
    }
}

#[test]
fn a_snapshot_reuses_the_batches_no_upsert_touched() {
    let mut table = LiveTable::new("t", schema(), &["user".into()]).unwrap();
    let a = ((Some(1), None), Some(1.0));
    let b = ((Some(2), None), Some(2.0));
    table.apply(&batch(&[a, b])).unwrap();
    table
        .apply(&batch(&[((Some(3), None), Some(3.0))]))
        .unwrap();
    let first = table.snapshot().unwrap();
    table
        .apply(&batch(&[((Some(4), None), Some(4.0))]))
        .unwrap();
    let second = table.snapshot().unwrap();
    assert_eq!(second.len(), 3);
    for i in 0..2 {
        assert!(Arc::ptr_eq(first[i].column(0), second[i].column(0)));
    }
    // Replacing key 2 rewrites only the first chunk.
    table
        .apply(&batch(&[((Some(2), None), Some(9.0))]))
        .unwrap();
    let third = table.snapshot().unwrap();
    assert_eq!(third[0].num_rows(), 1);
    assert!(Arc::ptr_eq(first[1].column(0), third[1].column(0)));
    assert_eq!(contents(&third).len(), 4);
    assert_eq!(
        contents(&first).get(&(Some(2), None)),
        Some(&Some(2.0f64.to_bits()))
    );
}

#[test]
fn a_key_must_name_columns_of_the_table() {
    let err = LiveTable::new("demand", schema(), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table 'demand'") && err.contains("needs a key"),
        "{err}"
    );
    let err = LiveTable::new("demand", schema(), &["geohash".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key column 'geohash'") && err.contains("user, cell, v"),
        "{err}"
    );
}

fn total(batches: &[RecordBatch]) -> f64 {
    batches
        .iter()
        .map(|b| {
            let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
            v.iter().flatten().sum::<f64>()
        })
        .sum()
}

/// Readers on other threads, reading while epochs are published, see every table at one
/// epoch: two tables written with the same totals per epoch always show equal totals, the
/// ones of the epoch the snapshot names; an applied but unpublished epoch is not seen.
#[test]
fn readers_see_whole_epochs_in_every_table_at_once() {
    use super::LiveTables;
    let mut live = LiveTables::new();
    for name in ["a", "b"] {
        live.add(LiveTable::new(name, schema(), &["user".into()]).unwrap())
            .unwrap();
    }
    assert!(
        live.add(LiveTable::new("a", schema(), &["user".into()]).unwrap())
            .is_err()
    );
    let published = live.published();
    assert_eq!(published.current().epoch, 0);
    const LAST: u64 = 2_000;
    // Epoch e sets user (e % 50) to e in both tables: the total of epoch e is known.
    let expected = |epoch: u64| -> f64 {
        let mut last = BTreeMap::new();
        for e in 1..=epoch {
            last.insert(e % 50, e as f64);
        }
        last.values().sum()
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let published = Arc::clone(&published);
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut reads = 0u64;
                while seen < LAST {
                    reads += 1;
                    let s = published.current();
                    if s.epoch == 0 {
                        continue;
                    }
                    let (a, b) = (total(&s.tables["a"].batches), total(&s.tables["b"].batches));
                    assert_eq!(a, b, "epoch {}: tables from different epochs", s.epoch);
                    assert_eq!(a, expected(s.epoch), "epoch {}: partial", s.epoch);
                    assert!(s.epoch >= seen, "went back from {seen} to {}", s.epoch);
                    seen = s.epoch;
                }
                reads
            })
        })
        .collect();
    for epoch in 1..=LAST {
        let rows = [((Some((epoch % 50) as i64), None), Some(epoch as f64))];
        live.apply("a", &batch(&rows)).unwrap();
        assert_eq!(published.current().epoch, epoch - 1, "seen before publish");
        live.apply("b", &batch(&rows)).unwrap();
        live.publish(epoch).unwrap();
    }
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(live.apply("c", &batch(&[])).is_err());
}
