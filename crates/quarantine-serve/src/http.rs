//! HTTP intake for rspamd's metadata_exporter (step 4).
use crate::server::{ConnBox, Shared};
pub fn serve(_sh: &Shared, _conn: Box<dyn ConnBox>) {}
