//! The agent's own API shapes (its image store).

use serde::{Deserialize, Serialize};

/// An image as the agent's store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub reference: String,
    pub digest: String,
    pub size_bytes: u64,
    pub layers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagesEnvelope {
    pub images: Vec<ImageView>,
}
