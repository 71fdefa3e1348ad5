//! kefu: a self-hosted customer-service chat gateway.
//!
//! Shoppers and support agents connect over WebSocket; kefu queues each
//! conversation, routes it to an agent, stores every message on disk before
//! acknowledging it, and delivers every entry in order to every
//! participant, across disconnects and restarts. The wire protocol is
//! `docs/PROTOCOL.md`.
//!
//! # The shape
//!
//! One process, one *shard* per core ([`shards::runtime`]): a pinned glommio
//! executor (io_uring) that owns a share of everything as plain
//! single-threaded data. Shards talk only through bounded lock-free
//! channels ([`shards::mesh`]); there is no lock on the message path.
//!
//! - A **connection** lives on the shard that accepted it (every shard
//!   listens on the same port with `SO_REUSEPORT`).
//! - A **conversation** lives on the shard its id places it on (the hash of
//!   tenant and visitor, written into the id), which alone assigns its seqs,
//!   appends to its log and fans its entries out.
//! - A **tenant's routing** (agents, queue, assignments) lives on the shard
//!   its id hashes to: one decision point per tenant.
//!
//! # The path of one message
//!
//! [`server::connection`] reads socket bytes into the shard's shared
//! scratch buffer; [`websocket`] unmasks and parses frames in place;
//! [`protocol::client`] parses the JSON borrowing from the buffer;
//! [`session`] checks the command and sends it to the conversation's shard
//! as a [`shard::envelope::Envelope`]. There [`conversation::append`]
//! deduplicates it (the [`conversation::filter`] Bloom filter spares nearly
//! every new id a store lookup), accepts it, and adds it to the next group
//! commit: one sled batch, flushed and `fdatasync`ed on the blocking pool
//! ([`store`]). Once it is on disk the sender gets its `ack`, and the entry,
//! encoded once by [`protocol::server`], goes to every subscriber's
//! connection, on whatever shard.
//!
//! # Map of the crate
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`], [`config`] | the command line, settings and their sources, `check-config` |
//! | [`auth`], [`tenants`] | HS256 tokens, the tenant directory |
//! | [`server`] | start-up and recovery, listeners, the connection task, HTTP routes and assets, admin, drain and reload |
//! | [`websocket`] | the sans-IO WebSocket handshake and frame codec |
//! | [`protocol`] | client frames in, server frames out, error and close codes |
//! | [`session`] | a connection's identity, hello, commands, outbound queue, welcome |
//! | [`shard`] | a shard's state, the envelopes between shards, dispatch, the router glue |
//! | [`conversation`] | conversations and visitors: the append pipeline, replay/sync/history, caches |
//! | [`routing`] | one tenant's queue and assignment decisions, as pure logic |
//! | [`store`] | the durable log on sled: records, keys, group commit, recovery, fault injection |
//! | [`metrics`] | per-shard counters, gathered by message, rendered for Prometheus |
//! | [`model`], [`ids`] | the domain types every layer shares |
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
