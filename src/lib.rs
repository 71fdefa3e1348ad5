//! kefu: a self-hosted customer-service chat gateway.
#![warn(missing_docs)]

pub mod config;
pub mod ids;
pub mod model;
pub mod protocol;
pub mod store;
pub mod tenants;
