//! Pipeline SQL for Volley: reading `.sql` pipeline files, validating table options, and
//! rewriting DataFusion plans into streaming plans.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod error;
pub mod model;
pub mod options;
pub mod pipeline;
pub mod splitter;
pub mod sql_text;
pub mod stream;
pub mod table;
pub mod watermark;

pub use error::{Result, SqlError, StatementRef};
pub use model::ModelDecl;
pub use options::{COMMON_OPTIONS, OptionSpec, TableOptions};
pub use pipeline::{InsertDecl, Pipeline};
pub use table::{DeadLetterLimit, KindCatalog, TableDecl};
pub use watermark::WatermarkSpec;
