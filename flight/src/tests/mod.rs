//! The Flight SQL service through arrow-flight's own client, over a real TCP connection.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};
use volley_connectors::live::{LiveTable, LiveTables};

use super::{Auth, DEFAULT_QUERY_MEMORY, QueryEngine, Tls, VolleyFlightSql, serve};

fn demand(rows: &[(&str, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("geohash6", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

/// A server over `live`'s tables, and a client of it.
async fn server(
    live: &mut LiveTables,
) -> (
    FlightSqlServiceClient<Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (addr, stop) = serve_with(live, Auth::open(), None, DEFAULT_QUERY_MEMORY).await;
    (client(addr).await, stop)
}

async fn serve_with(
    live: &LiveTables,
    auth: Auth,
    tls: Option<Tls>,
    memory: usize,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let engine = Arc::new(QueryEngine::new(live.published(), memory).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = VolleyFlightSql::new(engine, auth).unwrap();
    tokio::spawn(serve(service, listener, tls, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn client(addr: std::net::SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        assert!(
            endpoint.location.is_empty(),
            "an endpoint of this server has no location"
        );
        let ticket = endpoint.ticket.unwrap();
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        out.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

fn pairs(batches: &[RecordBatch]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let g = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let g = g.as_any().downcast_ref::<StringArray>().unwrap();
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend((0..b.num_rows()).map(|i| (g.value(i).to_string(), n.value(i))));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_the_published_epoch_and_writes_are_refused() {
    let mut live = LiveTables::new();
    live.add(LiveTable::new("demand", demand(&[]).schema(), &["geohash6".into()]).unwrap())
        .unwrap();
    let (mut client, _stop) = server(&mut live).await;
    // Before the first epoch: the table exists, empty.
    let rows = query(&mut client, "SELECT geohash6, n FROM demand")
        .await
        .unwrap();
    assert_eq!(pairs(&rows), vec![]);

    live.apply(
        "demand",
        &demand(&[("9q8yyk", 3), ("9q8yym", 4), ("9q9p1b", 1)]),
    )
    .unwrap();
    live.publish(1).unwrap();
    live.apply("demand", &demand(&[("9q8yyk", 5), ("dr5reg", 2)]))
        .unwrap();
    // Applied, not published: queries still see epoch 1.
    let sql = "SELECT substr(geohash6, 1, 4) AS g4, sum(n) AS n FROM demand GROUP BY 1 ORDER BY 1";
    let rows = query(&mut client, sql).await.unwrap();
    assert_eq!(pairs(&rows), vec![("9q8y".into(), 7), ("9q9p".into(), 1)]);
    live.publish(2).unwrap();
    let rows = query(&mut client, sql).await.unwrap();
    assert_eq!(
        pairs(&rows),
        vec![("9q8y".into(), 9), ("9q9p".into(), 1), ("dr5r".into(), 2)]
    );
    // Schema-qualified, and a point lookup.
    let rows = query(
        &mut client,
        "SELECT geohash6, n FROM live.demand WHERE geohash6 = '9q8yyk'",
    )
    .await
    .unwrap();
    assert_eq!(pairs(&rows), vec![("9q8yyk".into(), 5)]);

    for (sql, want) in [
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT nope FROM demand", "nope"),
        ("INSERT INTO demand VALUES ('x', 1)", "read-only"),
        ("CREATE TABLE t (x INT)", "read-only"),
        ("DROP TABLE demand", "read-only"),
    ] {
        let err = query(&mut client, sql).await.unwrap_err();
        assert!(err.contains(want), "{sql}: {err}");
    }
    let err = client
        .execute_update("DELETE FROM demand".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
    // The server still answers.
    let rows = query(&mut client, "SELECT geohash6, n FROM demand WHERE n = 2")
        .await
        .unwrap();
    assert_eq!(pairs(&rows), vec![("dr5reg".into(), 2)]);
}

mod metadata;
mod prepared;
mod security;
