//! `hello`: who is this connection?

use std::rc::Rc;
use std::time::Duration;

use super::{Conn, Session, SessionState, TokenBucket};
use crate::auth::{self, Identity};
use crate::ids::{Participant, Role};
use crate::metrics::{gauge_add, HandshakeFailure};
use crate::protocol::client::Command;
use crate::protocol::close;
use crate::routing::AgentProfile;
use crate::shard::envelope::{Envelope, VisitorProfile};
use crate::shard::Shard;

/// The budget of non-`msg` frames: four times the message rate, at least
/// 100 a second; none when the message rate limit is off.
fn frame_budget(msg_rate_limit: u32) -> TokenBucket {
    if msg_rate_limit == 0 {
        TokenBucket::new(0)
    } else {
        TokenBucket::with_rate((f64::from(msg_rate_limit) * 4.0).max(100.0))
    }
}

/// Lifetime of the token issued to an anonymous visitor: long enough that a
/// returning shopper keeps its conversation, short enough to expire.
pub const ANONYMOUS_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Shard {
    /// The first frame of a session. Anything but a good hello closes the connection.
    pub fn on_hello(&self, conn: &Rc<Conn>, command: Command<'_>) {
        let Command::Hello { token, tenant } = command else {
            self.metrics.handshake_failed(HandshakeFailure::BadHello);
            return conn.request_close(close::UNAUTHORIZED, "the first frame must be hello");
        };
        let tenants = self.tenants.borrow().clone();
        let identity = match (token, tenant) {
            (Some(token), _) => auth::verify(&token, &tenants, self.settings.limits.token_leeway),
            (None, Some(tenant)) => match tenants.get(&tenant) {
                Some(tenant) => auth::anonymous_visitor(tenant, ANONYMOUS_TOKEN_TTL),
                None => {
                    self.metrics
                        .handshake_failed(HandshakeFailure::Unauthorized);
                    return conn.request_close(close::UNAUTHORIZED, "unknown tenant");
                }
            },
            (None, None) => {
                self.metrics.handshake_failed(HandshakeFailure::BadHello);
                return conn
                    .request_close(close::MALFORMED_HELLO, "hello needs a token or a tenant");
            }
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) => {
                self.metrics
                    .handshake_failed(HandshakeFailure::Unauthorized);
                tracing::debug!(conn = conn.id, peer = %conn.peer, reason = e.reason(), "hello refused");
                return conn.request_close(close::UNAUTHORIZED, "unauthorized");
            }
        };
        if !identity.tenant.allows_origin(conn.origin.as_deref()) {
            self.metrics.handshake_failed(HandshakeFailure::Origin);
            return conn.request_close(close::ORIGIN_NOT_ALLOWED, "origin not allowed");
        }
        self.attach(conn, identity);
    }

    fn attach(&self, conn: &Rc<Conn>, identity: Identity) {
        let who = Participant {
            role: identity.role,
            id: identity.id.clone(),
        };
        let tenant_id = identity.tenant.id.clone();
        let profile = VisitorProfile {
            name: identity.name.clone(),
            skill: identity.skill.clone(),
            lang: identity.lang.clone(),
            vip: identity.vip,
        };
        gauge_add(&self.metrics.pending, -1);
        match identity.role {
            Role::Visitor => gauge_add(&self.metrics.visitors, 1),
            Role::Agent => gauge_add(&self.metrics.agents, 1),
        }
        conn.begin_welcome();
        let conn_ref = crate::ids::ConnRef {
            shard: self.id,
            id: conn.id,
        };
        match identity.role {
            Role::Visitor => self.send(
                self.home_of(&tenant_id, &who.id),
                Envelope::VisitorAttach {
                    tenant: tenant_id,
                    visitor: who.id.clone(),
                    profile: profile.clone(),
                    conn: conn_ref,
                },
            ),
            Role::Agent => {
                let max_chats = identity
                    .max_chats
                    .unwrap_or(identity.tenant.max_chats)
                    .max(1);
                self.send(
                    self.router_of(&tenant_id),
                    Envelope::AgentAttach {
                        tenant: tenant_id,
                        profile: AgentProfile {
                            id: who.id.clone(),
                            name: identity.name.clone(),
                            skills: identity.skills.clone(),
                            langs: identity.langs.clone(),
                            max_chats,
                        },
                        conn: conn_ref,
                    },
                );
            }
        }
        *conn.state.borrow_mut() = SessionState::Active(Box::new(Session {
            tenant: identity.tenant,
            who,
            name: identity.name,
            profile,
            issued_token: identity.issued_token,
            rate: TokenBucket::new(self.settings.limits.msg_rate_limit),
            frames: frame_budget(self.settings.limits.msg_rate_limit),
        }));
    }

    /// A connection is gone: the shards that deliver to it stop.
    pub fn detach(&self, conn: &Conn) {
        let state = std::mem::replace(&mut *conn.state.borrow_mut(), SessionState::Closing);
        match state {
            SessionState::Active(session) => {
                let conn_ref = crate::ids::ConnRef {
                    shard: self.id,
                    id: conn.id,
                };
                let tenant = session.tenant.id.clone();
                match session.who.role {
                    Role::Visitor => {
                        gauge_add(&self.metrics.visitors, -1);
                        self.send(
                            self.home_of(&tenant, &session.who.id),
                            Envelope::VisitorDetach {
                                tenant,
                                visitor: session.who.id,
                                conn: conn_ref,
                            },
                        );
                    }
                    Role::Agent => {
                        gauge_add(&self.metrics.agents, -1);
                        self.send(
                            self.router_of(&tenant),
                            Envelope::AgentDetach {
                                tenant,
                                agent: session.who.id,
                                conn: conn_ref,
                            },
                        );
                    }
                }
            }
            SessionState::AwaitingHello => gauge_add(&self.metrics.pending, -1),
            SessionState::Closing => {}
        }
    }
}
