//! The Arrow Flight SQL service: statements over the live tables' latest snapshot.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    CommandStatementQuery, CommandStatementUpdate, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::query::{QueryEngine, QueryError};

fn status(err: QueryError) -> Status {
    match err {
        QueryError::Query(message) => Status::invalid_argument(message),
        QueryError::Internal(message) => Status::internal(message),
    }
}

/// Serves Flight SQL over a [`QueryEngine`].
#[derive(Debug, Clone)]
pub struct VolleyFlightSql {
    engine: Arc<QueryEngine>,
}

impl VolleyFlightSql {
    /// A service answering from `engine`.
    pub fn new(engine: Arc<QueryEngine>) -> Self {
        Self { engine }
    }
}

type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightSqlService for VolleyFlightSql {
    type FlightService = VolleyFlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (frame, _) = self.engine.plan(&query.query).await.map_err(status)?;
        let schema = frame.schema().as_arrow().clone();
        // The ticket carries the statement: any server of this pipeline can answer it, and
        // it runs over the snapshot published when it is fetched.
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        // No location: fetch from this server.
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket's statement is not UTF-8"))?;
        let (frame, _) = self.engine.plan(&sql).await.map_err(status)?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame
            .execute_stream()
            .await
            .map_err(|e| Status::invalid_argument(e.strip_backtrace().to_string()))?
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        let stream: DataStream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map(|r| r.map_err(Status::from))
            .boxed();
        Ok(Response::new(stream))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<arrow_flight::sql::server::PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(
            "updates are refused: the tables are read-only (live tables are written by the pipeline, system tables by Volley)",
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
