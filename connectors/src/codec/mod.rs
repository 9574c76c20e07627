//! Decoding message payloads (Kafka values, lines) into Arrow record batches, with every bad
//! payload isolated rather than failing the batch.

pub mod json;

pub use json::{JsonDecoder, Rejected};
