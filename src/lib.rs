//! kefu: a self-hosted customer-service chat gateway.
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod debug;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod session;
pub mod shard;
pub mod store;
pub mod tenants;
pub mod websocket;
