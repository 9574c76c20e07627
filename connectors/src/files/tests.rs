//! Sink → source round trips for every file format.

use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, Int64Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use tokio::time::Instant;
use volley_sql::{StatementRef, TableOptions};

use super::*;
use crate::generator::{GeneratorOptions, generate_rides, rides_schema};
use crate::traits::SourcePoll;

fn decl(format: FileFormat, location: &str, options: &[(&str, &str)], declared: bool) -> TableDecl {
    TableDecl {
        name: "trips".to_string(),
        kind: format.kind().to_string(),
        location: location.to_string(),
        declared_schema: declared.then(rides_schema),
        options: TableOptions::unchecked(
            "trips",
            options.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        ),
        watermark: None,
        at: StatementRef::default(),
    }
}

fn rides() -> GeneratorOptions {
    GeneratorOptions {
        disorder: Duration::from_millis(1500),
        ..GeneratorOptions::default()
    }
}

async fn drain(source: &mut dyn Source, max_rows: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    loop {
        match source
            .poll_batch(max_rows, Instant::now() + Duration::from_secs(30))
            .await
            .unwrap()
        {
            SourcePoll::Data(batch) => {
                assert!(batch.num_rows() <= max_rows && batch.num_rows() > 0);
                out.push(batch);
            }
            SourcePoll::Partitions(_) => panic!("a file source is one stream"),
            SourcePoll::Pending => panic!("a generous deadline should not run out"),
            SourcePoll::Exhausted => return out,
        }
    }
}

fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A sink of `table` for rows of [`rides_schema`].
async fn rides_sink(connector: &FileConnector, table: &TableDecl) -> Box<dyn Sink> {
    connector
        .open_sink(table, rides_schema(), &SinkContext::default())
        .await
        .unwrap()
}

/// Writes rows [0, 100) as epochs 1 (two batches), 2 (empty) and 3.
async fn write_three_epochs(sink: &mut dyn Sink) {
    let opts = rides();
    sink.write_epoch(
        1,
        &[generate_rides(&opts, 0, 30), generate_rides(&opts, 30, 50)],
    )
    .await
    .unwrap();
    sink.write_epoch(2, &[generate_rides(&opts, 50, 50)])
        .await
        .unwrap();
    sink.write_epoch(3, &[generate_rides(&opts, 50, 100)])
        .await
        .unwrap();
}

async fn round_trip(format: FileFormat, options: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table = decl(format, out.to_str().unwrap(), options, true);
    let connector = FileConnector::new(format);
    let mut sink = rides_sink(&connector, &table).await;
    write_three_epochs(sink.as_mut()).await;
    sink.close().await.unwrap();
    let ext = format.extension();
    assert_eq!(
        file_names(&out),
        [
            format!("part-00000000000000000001.{ext}"),
            format!("part-00000000000000000003.{ext}")
        ]
    );

    let mut source = connector.open_source(&table, rides_schema()).await.unwrap();
    let batches = drain(source.as_mut(), 7).await;
    // Parquet batches end with each file; CSV and JSON records are cut across files.
    let slices = if format == FileFormat::Parquet {
        16
    } else {
        15
    };
    assert_eq!(
        batches.len(),
        slices,
        "{format:?}: two files of 50 rows, cut into slices of 7"
    );
    assert_eq!(source.position().offset(), 100);
    let all = concat_batches(&rides_schema(), &batches).unwrap();
    assert_eq!(
        all,
        generate_rides(&rides(), 0, 100),
        "{format:?} round trip"
    );
    assert!(matches!(
        source.poll_batch(7, Instant::now()).await.unwrap(),
        SourcePoll::Exhausted
    ));
}

#[tokio::test]
async fn parquet_round_trip() {
    round_trip(FileFormat::Parquet, &[]).await;
}

#[tokio::test]
async fn csv_round_trip() {
    round_trip(FileFormat::Csv, &[]).await;
    round_trip(
        FileFormat::Csv,
        &[("has_header", "false"), ("delimiter", "|")],
    )
    .await;
}

#[tokio::test]
async fn json_round_trip() {
    round_trip(FileFormat::Json, &[]).await;
}

#[tokio::test]
async fn rewriting_an_epoch_replaces_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap().to_string();
    let table = decl(FileFormat::Parquet, &location, &[], false);
    let mut sink = rides_sink(&FileConnector::new(FileFormat::Parquet), &table).await;
    let opts = rides();
    sink.write_epoch(4, &[generate_rides(&opts, 0, 10)])
        .await
        .unwrap();
    sink.write_epoch(4, &[generate_rides(&opts, 0, 10)])
        .await
        .unwrap();
    assert_eq!(
        file_names(dir.path()),
        ["part-00000000000000000004.parquet"]
    );
    let rows = read_sink_dir(&location, FileFormat::Parquet).await.unwrap();
    assert_eq!(
        concat_batches(&rides_schema(), &rows).unwrap(),
        generate_rides(&opts, 0, 10)
    );
}

#[tokio::test]
async fn read_sink_dir_returns_epochs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap().to_string();
    assert!(
        read_sink_dir(&location, FileFormat::Parquet)
            .await
            .unwrap()
            .is_empty()
    );
    let table = decl(FileFormat::Parquet, &location, &[], false);
    let mut sink = rides_sink(&FileConnector::new(FileFormat::Parquet), &table).await;
    let opts = rides();
    // Epoch 10 sorts after epoch 9 only because names are zero-padded.
    sink.write_epoch(10, &[generate_rides(&opts, 20, 30)])
        .await
        .unwrap();
    sink.write_epoch(9, &[generate_rides(&opts, 0, 20)])
        .await
        .unwrap();
    let rows = read_sink_dir(&location, FileFormat::Parquet).await.unwrap();
    assert_eq!(
        concat_batches(&rides_schema(), &rows).unwrap(),
        generate_rides(&opts, 0, 30)
    );
}

#[tokio::test]
async fn schema_is_inferred_from_files_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("never_written");
    let table = decl(FileFormat::Parquet, location.to_str().unwrap(), &[], false);
    let connector = FileConnector::new(FileFormat::Parquet);
    assert!(connector.infer_schema(&table).await.unwrap().is_none());

    let mut sink = rides_sink(&connector, &table).await;
    write_three_epochs(sink.as_mut()).await;
    let inferred = connector.infer_schema(&table).await.unwrap().unwrap();
    let names: Vec<_> = inferred
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        ["request_id", "rider_id", "lat", "lon", "event_time"]
    );

    // A single file as LOCATION is read whatever its name.
    let one = location.join("part-00000000000000000003.parquet");
    let table = decl(FileFormat::Parquet, one.to_str().unwrap(), &[], true);
    let mut source = connector.open_source(&table, rides_schema()).await.unwrap();
    let rows = drain(source.as_mut(), 1000).await;
    assert_eq!(
        concat_batches(&rides_schema(), &rows).unwrap(),
        generate_rides(&rides(), 50, 100)
    );
}

#[tokio::test]
async fn batch_table_queries_memory_store_from_any_session() {
    let table = decl(FileFormat::Json, "memory://files-test/trips", &[], true);
    let connector = FileConnector::new(FileFormat::Json);
    let mut sink = rides_sink(&connector, &table).await;
    write_three_epochs(sink.as_mut()).await;

    let provider = connector.batch_table(&table, rides_schema()).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("trips", provider).unwrap();
    let batches = ctx
        .sql("SELECT count(*) AS n, sum(request_id) AS ids FROM trips")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("| 100 | 4950 |"), "{text}");
}

#[tokio::test]
async fn bad_location_and_options_name_the_table() {
    let connector = FileConnector::new(FileFormat::Csv);
    let err = connector
        .open_sink(
            &decl(FileFormat::Csv, "ftp://host/x", &[], true),
            rides_schema(),
            &SinkContext::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("trips") && err.contains("ftp"), "{err}");
    let err = connector
        .open_sink(
            &decl(FileFormat::Csv, "out", &[("delimiter", "ab")], true),
            rides_schema(),
            &SinkContext::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("trips") && err.contains("delimiter"), "{err}");
    assert_eq!(FileFormat::from_kind("parquet"), Some(FileFormat::Parquet));
    assert!(
        FileConnector::new(FileFormat::Parquet)
            .options()
            .iter()
            .any(|o| o.name == "replay_order")
    );
}

/// A table `payments` over `location` declaring `columns`.
fn payments(format: FileFormat, location: &str, columns: Vec<Field>) -> TableDecl {
    TableDecl {
        name: "payments".to_string(),
        declared_schema: Some(Arc::new(Schema::new(columns))),
        ..decl(format, location, &[], false)
    }
}

/// `dir/p.parquet`: `id` INT, `amount` DOUBLE (871.47, 12.5), `fee` FLOAT (0.25, 1.5).
fn payments_parquet(dir: &std::path::Path) -> std::path::PathBuf {
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
        ("amount", Arc::new(Float64Array::from(vec![871.47, 12.5]))),
        ("fee", Arc::new(Float32Array::from(vec![0.25, 1.5]))),
    ])
    .unwrap();
    let path = dir.join("p.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    path
}

#[tokio::test]
async fn a_parquet_column_declared_a_lossy_type_is_refused_naming_everything() {
    let dir = tempfile::tempdir().unwrap();
    let file = payments_parquet(dir.path());
    let table = payments(
        FileFormat::Parquet,
        dir.path().to_str().unwrap(),
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Int64, true),
        ],
    );
    let schema = table.declared_schema.clone().unwrap();
    let connector = FileConnector::new(FileFormat::Parquet);
    let opened = connector.open_source(&table, Arc::clone(&schema)).await;
    let batch = connector.batch_table(&table, schema).await;
    for err in [opened.err(), batch.err()] {
        let err = err.expect("a lossy declaration is an error").to_string();
        assert!(
            err.contains(&format!(
                "table 'payments': column 'amount' is DOUBLE in file '{}' but declared BIGINT; converting would lose data — declare it DOUBLE",
                file.display()
            )),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_parquet_column_declared_a_wider_type_reads_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = payments_parquet(dir.path());
    let table = payments(
        FileFormat::Parquet,
        file.to_str().unwrap(),
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("fee", DataType::Float64, true),
        ],
    );
    let schema = table.declared_schema.clone().unwrap();
    let expected = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Float64Array::from(vec![871.47, 12.5])),
            Arc::new(Float64Array::from(vec![0.25, 1.5])),
        ],
    )
    .unwrap();
    let connector = FileConnector::new(FileFormat::Parquet);
    let mut source = connector
        .open_source(&table, Arc::clone(&schema))
        .await
        .unwrap();
    let rows = drain(source.as_mut(), 10).await;
    assert_eq!(concat_batches(&schema, &rows).unwrap(), expected);

    let provider = connector.batch_table(&table, schema).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("payments", provider).unwrap();
    let rows = ctx
        .sql("SELECT * FROM payments ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(concat_batches(&expected.schema(), &rows).unwrap(), expected);
}

#[tokio::test]
async fn a_fraction_in_an_integer_column_is_a_dead_letter_in_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let columns = || {
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Int64, true),
        ]
    };
    for (format, text) in [
        (
            FileFormat::Json,
            "{\"id\": 1, \"amount\": 871}\n{\"id\": 2, \"amount\": 871.47}\n",
        ),
        (FileFormat::Csv, "id,amount\n1,871\n2,871.47\n"),
    ] {
        let path = dir.path().join(format!("p.{}", format.extension()));
        std::fs::write(&path, text).unwrap();
        let table = payments(format, path.to_str().unwrap(), columns());
        let schema = table.declared_schema.clone().unwrap();
        let mut source = FileConnector::new(format)
            .open_source(&table, Arc::clone(&schema))
            .await
            .unwrap();
        let rows = concat_batches(&schema, &drain(source.as_mut(), 10).await).unwrap();
        let amounts: &Int64Array = rows.column(1).as_primitive();
        assert_eq!(amounts.values().to_vec(), vec![871], "{format:?}");
        let letters = source.take_rejected();
        assert_eq!(letters.len(), 1, "{format:?}: {letters:?}");
        assert!(
            letters[0].error.contains("871.47"),
            "{format:?}: {letters:?}"
        );
        if format == FileFormat::Json {
            assert!(
                letters[0].error.contains("BIGINT column 'amount'")
                    && letters[0].error.contains("not a whole number"),
                "{letters:?}"
            );
        }
    }
}

#[tokio::test]
async fn parquet_read_for_some_columns_decodes_those_and_fills_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table = decl(FileFormat::Parquet, out.to_str().unwrap(), &[], true);
    let connector = FileConnector::new(FileFormat::Parquet);
    let mut sink = rides_sink(&connector, &table).await;
    write_three_epochs(sink.as_mut()).await;
    sink.close().await.unwrap();
    let expected = generate_rides(&rides(), 0, 100);
    // request_id and event_time only (rides: request_id, rider_id, lat, lon, event_time).
    let mut source = connector.open_source(&table, rides_schema()).await.unwrap();
    source.read_only(&[4, 0]).await.unwrap();
    let all = concat_batches(&rides_schema(), &drain(source.as_mut(), 7).await).unwrap();
    assert_eq!(source.position().offset(), 100);
    for read in [0, 4] {
        assert_eq!(
            all.column(read),
            expected.column(read),
            "column {read} as written"
        );
    }
    // The columns left out hold the type's default (they are NOT NULL).
    assert_eq!(
        all.column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .iter()
            .max(),
        Some(&0)
    );
    assert_eq!(all.column(2).null_count(), 0);
    assert!(
        all.column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .values()
            .iter()
            .all(|v| *v == 0.0)
    );
    // Asked after its first poll, a source reads on as it started.
    let mut late = connector.open_source(&table, rides_schema()).await.unwrap();
    let first = drain_one(late.as_mut()).await;
    late.read_only(&[0]).await.unwrap();
    let mut rest = drain(late.as_mut(), 7).await;
    rest.insert(0, first);
    assert_eq!(concat_batches(&rides_schema(), &rest).unwrap(), expected);
}

async fn drain_one(source: &mut dyn Source) -> RecordBatch {
    let far = Instant::now() + std::time::Duration::from_secs(60);
    match source.poll_batch(7, far).await.unwrap() {
        SourcePoll::Data(batch) => batch,
        other => panic!("expected rows, got {other:?}"),
    }
}

#[tokio::test]
async fn a_json_sink_writes_nulls_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table = decl(FileFormat::Json, out.to_str().unwrap(), &[], false);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("merchant", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(arrow::array::StringArray::from(vec![None, Some("m")])),
            Arc::new(Float64Array::from(vec![Some(0.5), None])),
        ],
    )
    .unwrap();
    let connector = FileConnector::new(FileFormat::Json);
    let mut sink = connector
        .open_sink(&table, schema, &SinkContext::default())
        .await
        .unwrap();
    sink.write_epoch(1, &[batch]).await.unwrap();
    sink.close().await.unwrap();
    let name = file_names(&out).into_iter().next().unwrap();
    let text = std::fs::read_to_string(out.join(name)).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"id": 1, "merchant": null, "score": 0.5}),
            serde_json::json!({"id": 2, "merchant": "m", "score": null}),
        ]
    );
}
