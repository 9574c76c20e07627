//! The catalog commands generic tools send before they query.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use tonic::transport::Channel;
use volley_connectors::live::{LiveTable, LiveTables};

use super::{demand, server};
use crate::sql_info::JDBC_KEYS;

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> RecordBatch {
    let schema = info.clone().try_decode_schema().unwrap();
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        assert!(endpoint.location.is_empty());
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    arrow::compute::concat_batches(&std::sync::Arc::new(schema), &out).unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let column = arrow::compute::cast(
        batch.column_by_name(column).unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or("<null>").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_schemas_tables_keys_and_sql_info_are_answered() {
    let mut live = LiveTables::new();
    live.add(LiveTable::new("demand", demand(&[]).schema(), &["geohash6".into()]).unwrap())
        .unwrap();
    let (mut client, _stop) = server(&mut live).await;

    let info = client.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "catalog_name"),
        ["volley"]
    );

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let mut schemas = strings(&fetch(&mut client, info).await, "db_schema_name");
    schemas.sort();
    assert!(schemas.contains(&"live".to_string()), "{schemas:?}");
    assert!(
        schemas.contains(&"information_schema".to_string()),
        "{schemas:?}"
    );

    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("volley".into()),
            db_schema_filter_pattern: Some("li%".into()),
            table_name_filter_pattern: None,
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await;
    assert_eq!(strings(&tables, "table_name"), ["demand"]);
    assert_eq!(strings(&tables, "table_type"), ["TABLE"]);
    let schema_bytes = tables
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes.value(0)).unwrap();
    assert_eq!(schema.as_ref(), demand(&[]).schema().as_ref());

    let info = client.get_table_types().await.unwrap();
    let types = strings(&fetch(&mut client, info).await, "table_type");
    assert!(types.contains(&"TABLE".to_string()) && types.contains(&"VIEW".to_string()));

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "demand".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut client, info).await;
    assert_eq!(strings(&keys, "column_name"), ["geohash6"]);
    assert_eq!(
        keys.column_by_name("key_sequence")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        1
    );

    // Every key the JDBC driver's DatabaseMetaData reads is answered, and all keys at once.
    let info = client.get_sql_info(JDBC_KEYS.to_vec()).await.unwrap();
    let answered = fetch(&mut client, info).await;
    assert_eq!(answered.num_rows(), JDBC_KEYS.len());
    let info = client.get_sql_info(vec![]).await.unwrap();
    let all = fetch(&mut client, info).await;
    assert!(all.num_rows() >= JDBC_KEYS.len());
    let names = all.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
    assert!(
        names
            .iter()
            .any(|n| n == Some(SqlInfo::FlightSqlServerName as u32))
    );

    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = strings(&fetch(&mut client, info).await, "type_name");
    assert!(types.contains(&"BIGINT".to_string()) && types.contains(&"VARCHAR".to_string()));
}
