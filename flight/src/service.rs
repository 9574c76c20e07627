//! The Arrow Flight SQL service: statements, prepared statements and catalog commands over
//! the live tables' latest snapshot.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementSubstraitPlan, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{AUTHORIZATION, Auth};
use super::catalog;
use super::prepared::PreparedStatements;
use super::query::{QueryEngine, QueryError, query_error};
use super::sql_info;

fn status(err: QueryError) -> Status {
    match err {
        QueryError::Query(message) => Status::invalid_argument(message),
        QueryError::Internal(message) => Status::internal(message),
    }
}

/// Why every write is refused.
const READ_ONLY: &str = "writes are refused: the tables are read-only (live tables are written by the pipeline, system tables by Volley)";

/// Serves Flight SQL over a [`QueryEngine`].
#[derive(Clone)]
pub struct VolleyFlightSql {
    engine: Arc<QueryEngine>,
    prepared: Arc<PreparedStatements>,
    auth: Auth,
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for VolleyFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolleyFlightSql")
            .field("engine", &self.engine)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl VolleyFlightSql {
    /// A service answering from `engine`, letting in the callers `auth` admits.
    ///
    /// # Errors
    /// [`QueryError::Internal`] when the server's SQL information cannot be built.
    pub fn new(engine: Arc<QueryEngine>, auth: Auth) -> Result<Self, QueryError> {
        let sql_info = sql_info::sql_info_data()
            .map_err(|e| QueryError::Internal(format!("SQL info: {e}")))?;
        Ok(Self {
            engine,
            prepared: Arc::new(PreparedStatements::default()),
            auth,
            sql_info: Arc::new(sql_info),
        })
    }

    /// Who the service lets in.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The rows of `sql` with `values` bound, as Flight data.
    async fn rows(&self, sql: &str, values: Option<&RecordBatch>) -> Result<DataStream, Status> {
        let (frame, _) = self.engine.plan(sql, values).await.map_err(status)?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        // Partitions one after another, in order: a statement bound to several rows of values
        // answers for each row in turn (the union of their plans has its inputs' partitions
        // in the inputs' order).
        let partitions = frame
            .execute_stream_partitioned()
            .await
            .map_err(|e| status(query_error(e)))?;
        let batches = futures::stream::iter(partitions)
            .flatten()
            .map_err(|e| FlightError::Tonic(Box::new(status(query_error(e)))));
        Ok(FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map(|r| r.map_err(Status::from))
            .boxed())
    }
}

type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// A `FlightInfo` of `schema`, fetched from this server (no location) with `ticket`.
fn info(
    schema: &Schema,
    ticket: &Any,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// One batch as Flight data.
fn once(batch: Result<RecordBatch, QueryError>) -> Result<Response<DataStream>, Status> {
    let batch = batch.map_err(status)?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::iter([Ok(batch)]))
        .map(|r| r.map_err(Status::from))
        .boxed();
    Ok(Response::new(stream))
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// The (empty) answer to the foreign-key commands: live tables have no foreign keys.
fn foreign_keys() -> Result<RecordBatch, QueryError> {
    let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        utf8("pk_catalog_name", true),
        utf8("pk_db_schema_name", true),
        utf8("pk_table_name", false),
        utf8("pk_column_name", false),
        utf8("fk_catalog_name", true),
        utf8("fk_db_schema_name", true),
        utf8("fk_table_name", false),
        utf8("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        utf8("fk_key_name", true),
        utf8("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]));
    Ok(RecordBatch::new_empty(schema))
}

fn xdbc() -> Result<&'static arrow_flight::sql::metadata::XdbcTypeInfoData, Status> {
    catalog::XDBC_TYPES
        .as_ref()
        .map_err(|e| Status::internal(format!("SQL type info: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for VolleyFlightSql {
    type FlightService = VolleyFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // The credentials were checked on the way in; answer with the bearer token to use.
        self.auth.check(request.metadata())?;
        let token = self.auth.bearer().unwrap_or_default().to_string();
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if self.auth.required() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            response.metadata_mut().insert(AUTHORIZATION, value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (frame, _) = self.engine.plan(&query.query, None).await.map_err(status)?;
        // The ticket carries the statement: it runs over the snapshot published when it is
        // fetched.
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        info(
            frame.schema().as_arrow(),
            &ticket.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket's statement is not UTF-8"))?;
        Ok(Response::new(self.rows(&sql, None).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let (schema, parameters) = self.engine.prepare(&query.query).await.map_err(status)?;
        let handle = self.prepared.insert(query.query);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema: ipc_schema(&schema)?,
            parameter_schema: if parameters.fields().is_empty() {
                bytes::Bytes::new()
            } else {
                ipc_schema(&parameters)?
            },
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("the parameter values: {e}")))?;
        let Some(first) = batches.first() else {
            return Err(Status::invalid_argument(
                "no parameter values were sent (send a batch with one column per parameter)",
            ));
        };
        let values = arrow::compute::concat_batches(&first.schema(), &batches)
            .map_err(|e| Status::invalid_argument(format!("the parameter values: {e}")))?;
        self.prepared
            .bind(&query.prepared_statement_handle, values)
            .map_err(Status::not_found)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let prepared = self
            .prepared
            .get(&query.prepared_statement_handle)
            .map_err(Status::not_found)?;
        let (frame, _) = self
            .engine
            .plan(&prepared.sql, prepared.values.as_ref())
            .await
            .map_err(status)?;
        info(
            frame.schema().as_arrow(),
            &query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let prepared = self
            .prepared
            .get(&query.prepared_statement_handle)
            .map_err(Status::not_found)?;
        Ok(Response::new(
            self.rows(&prepared.sql, prepared.values.as_ref()).await?,
        ))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        self.prepared
            .close(&query.prepared_statement_handle)
            .map_err(Status::invalid_argument)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info(&schema, &query.as_any(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(catalog::catalogs(query))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info(&schema, &query.as_any(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(catalog::schemas(&self.engine, query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info(&schema, &query.as_any(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(catalog::tables(&self.engine, query).await)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info(&schema, &query.as_any(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(catalog::table_types(query))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        info(&schema, &query.as_any(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(
            query
                .into_builder(&self.sql_info)
                .build()
                .map_err(|e| QueryError::Internal(e.to_string())),
        )
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &catalog::primary_keys_schema(),
            &query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(catalog::primary_keys(&self.engine, &query))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = foreign_keys().map_err(status)?;
        info(&batch.schema(), &query.as_any(), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(foreign_keys())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = foreign_keys().map_err(status)?;
        info(&batch.schema(), &query.as_any(), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(foreign_keys())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = foreign_keys().map_err(status)?;
        info(&batch.schema(), &query.as_any(), request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(foreign_keys())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(xdbc()?).schema();
        info(&schema, &query.as_any(), request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        once(
            query
                .into_builder(xdbc()?)
                .build()
                .map_err(|e| QueryError::Internal(e.to_string())),
        )
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "Substrait plans are not accepted: send SQL",
        ))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn do_put_substrait_plan(
        &self,
        _ticket: CommandStatementSubstraitPlan,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
