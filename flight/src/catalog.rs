//! What generic tools ask before they query: catalogs, schemas, tables (with their Arrow
//! schemas), table types, primary keys and SQL types.

use std::sync::{Arc, LazyLock};

use arrow::array::{Int32Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTableTypes,
    CommandGetTables, Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

use super::query::{CATALOG, LIVE_SCHEMA, QueryEngine, QueryError, SYSTEM_SCHEMA};

/// The table type of live tables.
pub(super) const TABLE: &str = "TABLE";
/// The table type of `system` tables.
pub(super) const SYSTEM_TABLE: &str = "SYSTEM TABLE";
/// The table type of `information_schema` views.
pub(super) const VIEW: &str = "VIEW";

fn arrow(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

/// `GetCatalogs`: the one catalog.
pub(super) fn catalogs(query: CommandGetCatalogs) -> Result<RecordBatch, QueryError> {
    let mut builder = query.into_builder();
    builder.append(CATALOG);
    builder.build().map_err(arrow)
}

/// `GetTableTypes`.
pub(super) fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, QueryError> {
    let mut builder = query.into_builder();
    for kind in [SYSTEM_TABLE, TABLE, VIEW] {
        builder.append(kind);
    }
    builder.build().map_err(arrow)
}

/// `GetDbSchemas`, filtered as the command asks.
pub(super) fn schemas(
    engine: &QueryEngine,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, QueryError> {
    let (ctx, _) = engine.context()?;
    let mut builder = query.into_builder();
    for (schema, _) in schemas_of(&ctx) {
        builder.append(CATALOG, schema);
    }
    builder.build().map_err(arrow)
}

/// The schemas of `ctx`'s catalog, by name, `information_schema` included (DataFusion serves
/// it beside the catalog, not in it).
fn schemas_of(ctx: &SessionContext) -> Vec<(String, Arc<dyn SchemaProvider>)> {
    let mut out: Vec<(String, Arc<dyn SchemaProvider>)> = ctx
        .catalog(CATALOG)
        .map(|catalog| {
            catalog
                .schema_names()
                .into_iter()
                .filter_map(|name| catalog.schema(&name).map(|schema| (name, schema)))
                .collect()
        })
        .unwrap_or_default();
    let info = InformationSchemaProvider::new(Arc::clone(ctx.state().catalog_list()));
    out.push((INFORMATION_SCHEMA.to_string(), Arc::new(info)));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const INFORMATION_SCHEMA: &str = "information_schema";

/// `GetTables`, filtered as the command asks, with each table's Arrow schema when asked.
pub(super) async fn tables(
    engine: &QueryEngine,
    query: CommandGetTables,
) -> Result<RecordBatch, QueryError> {
    let (ctx, _) = engine.context()?;
    let mut builder = query.into_builder();
    for (schema_name, schema) in schemas_of(&ctx) {
        for table_name in schema.table_names() {
            let table = schema
                .table(&table_name)
                .await
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            let Some(table) = table else { continue };
            let kind = if schema_name == SYSTEM_SCHEMA {
                SYSTEM_TABLE
            } else if table.table_type() == TableType::View {
                VIEW
            } else {
                TABLE
            };
            builder
                .append(CATALOG, &schema_name, &table_name, kind, &table.schema())
                .map_err(arrow)?;
        }
    }
    builder.build().map_err(arrow)
}

/// The schema of a `GetPrimaryKeys` answer.
pub(super) fn primary_keys_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// `GetPrimaryKeys`: a live table's key is its primary key (one row per key).
pub(super) fn primary_keys(
    engine: &QueryEngine,
    query: &CommandGetPrimaryKeys,
) -> Result<RecordBatch, QueryError> {
    let mut catalog = StringBuilder::new();
    let mut schema = StringBuilder::new();
    let mut table = StringBuilder::new();
    let mut column = StringBuilder::new();
    let mut key_name = StringBuilder::new();
    let mut sequence = Int32Builder::new();
    let ours = query.catalog.as_deref().is_none_or(|c| c == CATALOG)
        && query.db_schema.as_deref().is_none_or(|s| s == LIVE_SCHEMA);
    let snapshot = engine.snapshot();
    if let Some(live) = snapshot.tables.get(&query.table).filter(|_| ours) {
        for (position, name) in (1..).zip(live.key.iter()) {
            catalog.append_value(CATALOG);
            schema.append_value(LIVE_SCHEMA);
            table.append_value(&query.table);
            column.append_value(name);
            key_name.append_value(format!("{}_key", query.table));
            sequence.append_value(position);
        }
    }
    RecordBatch::try_new(
        primary_keys_schema(),
        vec![
            Arc::new(catalog.finish()),
            Arc::new(schema.finish()),
            Arc::new(table.finish()),
            Arc::new(column.finish()),
            Arc::new(key_name.finish()),
            Arc::new(sequence.finish()),
        ],
    )
    .map_err(arrow)
}

/// A SQL type: name, XDBC type, column size, literal prefix and suffix.
type TypeRow = (
    &'static str,
    XdbcDataType,
    Option<i32>,
    (Option<String>, Option<String>),
);

/// The SQL types queries can use (`GetXdbcTypeInfo`, JDBC's `getTypeInfo`).
pub(super) static XDBC_TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let quoted = |name: &str| (Some(format!("{name} '")), Some("'".to_string()));
    let types: [TypeRow; 14] = [
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), (None, None)),
        ("TINYINT", XdbcDataType::XdbcTinyint, Some(3), (None, None)),
        (
            "SMALLINT",
            XdbcDataType::XdbcSmallint,
            Some(5),
            (None, None),
        ),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(10), (None, None)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19), (None, None)),
        ("REAL", XdbcDataType::XdbcReal, Some(24), (None, None)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), (None, None)),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), (None, None)),
        (
            "VARCHAR",
            XdbcDataType::XdbcVarchar,
            None,
            (Some("'".into()), Some("'".into())),
        ),
        (
            "VARBINARY",
            XdbcDataType::XdbcVarbinary,
            None,
            (Some("X'".into()), Some("'".into())),
        ),
        ("DATE", XdbcDataType::XdbcDate, Some(10), quoted("DATE")),
        ("TIME", XdbcDataType::XdbcTime, Some(18), quoted("TIME")),
        (
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            Some(29),
            quoted("TIMESTAMP"),
        ),
        (
            "INTERVAL",
            XdbcDataType::XdbcInterval,
            None,
            quoted("INTERVAL"),
        ),
    ];
    for (name, data_type, column_size, (prefix, suffix)) in types {
        let numeric = matches!(
            data_type,
            XdbcDataType::XdbcTinyint
                | XdbcDataType::XdbcSmallint
                | XdbcDataType::XdbcInteger
                | XdbcDataType::XdbcBigint
                | XdbcDataType::XdbcReal
                | XdbcDataType::XdbcDouble
                | XdbcDataType::XdbcDecimal
        );
        let datetime = match data_type {
            // ODBC's SQL_CODE_DATE is 1, which the protocol names "year".
            XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            XdbcDataType::XdbcTime => Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
            XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            _ => None,
        };
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size,
            literal_prefix: prefix,
            literal_suffix: suffix,
            create_params: (name == "DECIMAL").then(|| vec!["precision".into(), "scale".into()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: name == "VARCHAR",
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: name == "DECIMAL",
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.into()),
            minimum_scale: (name == "DECIMAL").then_some(0),
            maximum_scale: (name == "DECIMAL").then_some(38),
            sql_data_type: data_type,
            datetime_subcode: datetime,
            num_prec_radix: numeric.then_some(if name == "DECIMAL" { 10 } else { 2 }),
            interval_precision: None,
        });
    }
    builder.build().map_err(|e| e.to_string())
});
