//! Protocol v1 on the wire: what clients send, what the gateway answers.
//!
//! The contract is `PROTOCOL.md` at the root of this repository. [`client`]
//! turns client text frames into typed commands without copying what it can
//! borrow; [`server`] encodes server frames once, as whole WebSocket frames,
//! so that every connection they go to shares the same bytes.

pub mod client;
pub mod codes;
pub mod server;

pub use codes::{close, ErrorCode};
