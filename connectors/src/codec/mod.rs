//! Decoding message payloads (Kafka values, lines) into Arrow record batches, with every bad
//! payload isolated rather than failing the batch.

pub mod csv;
pub mod isolate;
pub mod json;
mod numbers;
mod reading;
pub mod timestamps;

pub use csv::CsvDecoder;
pub use isolate::{PayloadDecoder, Rejected};
pub use json::{JsonDecoder, json_lines_writer};
pub use timestamps::TimestampUnit;
