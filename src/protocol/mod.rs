//! Protocol v1 on the wire: what clients send, what the gateway answers.
//!
//! The contract is `PROTOCOL.md` at the root of this repository. This module
//! turns client text frames into typed commands without copying what it can
//! borrow, and encodes server frames once so that every connection they go to
//! shares the same bytes.

pub mod codes;

pub use codes::{close, ErrorCode};
