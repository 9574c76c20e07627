//! What a streaming job tracks as it runs, shared by the epoch loop, the status line, the
//! metrics reporter and checkpoints: each source's progress and the run's totals.

pub mod letters;
mod source;
mod summary;

pub use letters::SourceLetters;
pub use source::SourceRuntime;
pub use summary::{Restored, RunSummary, SinkEpochs, model_line};
