//! kefu: a self-hosted customer-service chat gateway.
#![warn(missing_docs)]

pub mod ids;
pub mod protocol;
