//! Prepared statements with parameters, as JDBC prepares every query.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use volley_connectors::live::{LiveTable, LiveTables};

use super::{demand, pairs, server};

async fn fetch(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters_by_position() {
    let mut live = LiveTables::new();
    live.add(LiveTable::new("demand", demand(&[]).schema(), &["geohash6".into()]).unwrap())
        .unwrap();
    live.apply(
        "demand",
        &demand(&[("9q8yyk", 3), ("9q8yym", 4), ("dr5reg", 2)]),
    )
    .unwrap();
    live.publish(1).unwrap();
    let (mut client, _stop) = server(&mut live).await;

    // JDBC's '?' and DataFusion's '$1' both work; the parameter's type comes from its use.
    let mut statement = client
        .prepare(
            "SELECT geohash6, n FROM demand WHERE geohash6 = ? ORDER BY 1".into(),
            None,
        )
        .await
        .unwrap();
    let parameters = statement.parameter_schema().unwrap().clone();
    assert_eq!(parameters.fields().len(), 1);
    assert_eq!(parameters.field(0).data_type(), &DataType::Utf8);
    assert_eq!(statement.dataset_schema().unwrap().fields().len(), 2);
    let bind = |values: Vec<&str>| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(values))],
        )
        .unwrap()
    };
    statement.set_parameters(bind(vec!["9q8yym"])).unwrap();
    let info = statement.execute().await.unwrap();
    assert_eq!(
        pairs(&fetch(&mut client, info).await),
        vec![("9q8yym".into(), 4)]
    );
    // Rebinding replaces the values; several rows run the statement once each.
    statement
        .set_parameters(bind(vec!["dr5reg", "9q8yyk", "nowhere"]))
        .unwrap();
    let info = statement.execute().await.unwrap();
    assert_eq!(
        pairs(&fetch(&mut client, info).await),
        vec![("dr5reg".into(), 2), ("9q8yyk".into(), 3)]
    );
    statement.close().await.unwrap();

    // Values are cast to the type the parameter is used as.
    let mut statement = client
        .prepare(
            "SELECT geohash6, n FROM demand WHERE n > $1 ORDER BY 1".into(),
            None,
        )
        .await
        .unwrap();
    let values = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["2"]))],
    )
    .unwrap();
    statement.set_parameters(values).unwrap();
    let info = statement.execute().await.unwrap();
    assert_eq!(
        pairs(&fetch(&mut client, info).await),
        vec![("9q8yyk".into(), 3), ("9q8yym".into(), 4)]
    );

    // Too many values is an error naming the counts; unbound parameters too.
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    statement.set_parameters(two).unwrap();
    let err = statement.execute().await.unwrap_err().to_string();
    assert!(err.contains("1 parameter(s), 2 value(s)"), "{err}");
    let mut unbound = client
        .prepare("SELECT n FROM demand WHERE n = ?".into(), None)
        .await
        .unwrap();
    let err = unbound.execute().await.unwrap_err().to_string();
    assert!(err.contains("bind values"), "{err}");

    // A statement with no parameters prepares too, and writes do not prepare.
    let mut plain = client
        .prepare("SELECT count(*) AS n FROM demand".into(), None)
        .await
        .unwrap();
    assert!(plain.parameter_schema().unwrap().fields().is_empty());
    let info = plain.execute().await.unwrap();
    let rows = fetch(&mut client, info).await;
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    let err = client
        .prepare("INSERT INTO demand VALUES ('x', 1)".into(), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
}
