//! Commands of a session that said hello: checked here, carried out on the
//! shard that owns what they touch.

use std::rc::Rc;
use std::sync::Arc;

use super::{Conn, SessionState, RATE_LIMIT_STRIKES};
use crate::ids::{is_valid_user_id, ConnRef, ConvId, Role, UserId};
use crate::metrics::add;
use crate::protocol::client::{parse, Availability, Command, Parsed};
use crate::protocol::{close, ErrorCode};
use crate::routing::AgentStatus;
use crate::shard::envelope::{Envelope, Signal, Submit};
use crate::shard::Shard;

/// What a malformed frame costs from the frame budget, in frames.
const MALFORMED_FRAME_COST: f64 = 10.0;

impl Shard {
    /// One text message from a connection.
    pub fn on_text(&self, conn: &Rc<Conn>, text: &str) {
        if self.settings.fault_injection && self.debug_frame(conn, text) {
            return;
        }
        let parsed = parse(text);
        let awaiting_hello = matches!(&*conn.state.borrow(), SessionState::AwaitingHello);
        if awaiting_hello {
            return match parsed {
                Parsed::Command(command, _) => self.on_hello(conn, command),
                Parsed::NotAnObject => {
                    self.metrics
                        .handshake_failed(crate::metrics::HandshakeFailure::BadHello);
                    conn.request_close(
                        close::MALFORMED_HELLO,
                        "the first frame must be a JSON object",
                    )
                }
                Parsed::Refused(refusal) => {
                    self.metrics
                        .handshake_failed(crate::metrics::HandshakeFailure::BadHello);
                    // Invalid JSON is not a JSON object either, even when it
                    // starts with `{`: 4400, like any other non-object.
                    let json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
                    if refusal.hello || !json {
                        conn.request_close(close::MALFORMED_HELLO, "malformed hello")
                    } else {
                        conn.request_close(close::UNAUTHORIZED, "the first frame must be hello")
                    }
                }
            };
        }
        let conn_ref = ConnRef {
            shard: self.id,
            id: conn.id,
        };
        // Every frame but `msg` (which has its own limiter) spends from the
        // frame budget, and a malformed frame costs more: a client that
        // floods typing signals or garbage gets warnings, then 4429.
        let over_budget = match &mut *conn.state.borrow_mut() {
            SessionState::Active(session)
                if !matches!(parsed, Parsed::Command(Command::Msg { .. }, _)) =>
            {
                if matches!(parsed, Parsed::NotAnObject | Parsed::Refused(_)) {
                    session.frames.charge(MALFORMED_FRAME_COST);
                }
                (!session.frames.take()).then_some(session.frames.strikes)
            }
            _ => None,
        };
        if let Some(strikes) = over_budget {
            if strikes > RATE_LIMIT_STRIKES {
                return conn.request_close(close::TOO_MANY, "too many frames");
            }
            return self.error_to(
                conn_ref,
                ErrorCode::RateLimited,
                "too many frames, slow down",
                None,
            );
        }
        match parsed {
            Parsed::NotAnObject => self.error_to(
                conn_ref,
                ErrorCode::BadRequest,
                "a frame must be a JSON object",
                None,
            ),
            Parsed::Refused(r) => {
                self.error_to(conn_ref, r.code, &r.message, r.reference.as_deref())
            }
            Parsed::Command(command, reference) => {
                self.on_command(conn, conn_ref, command, reference.as_deref())
            }
        }
    }

    fn on_command(
        &self,
        conn: &Rc<Conn>,
        conn_ref: ConnRef,
        command: Command<'_>,
        reference: Option<&str>,
    ) {
        let (tenant, who, name, profile) = {
            let mut state = conn.state.borrow_mut();
            let SessionState::Active(session) = &mut *state else {
                return;
            };
            if matches!(command, Command::Msg { .. }) && !session.rate.take() {
                let strikes = session.rate.strikes;
                drop(state);
                if strikes > RATE_LIMIT_STRIKES {
                    return conn.request_close(close::TOO_MANY, "too many messages");
                }
                return self.error_to(
                    conn_ref,
                    ErrorCode::RateLimited,
                    "too many messages, slow down",
                    reference,
                );
            }
            (
                session.tenant.id.clone(),
                session.who.clone(),
                session.name.clone(),
                session.profile.clone(),
            )
        };
        let conv_of = |conv: &str| -> Result<(ConvId, usize), ()> {
            let conv = ConvId::from(conv);
            self.conv_shard(&conv).map(|shard| (conv, shard)).ok_or(())
        };
        let not_found = || {
            self.error_to(
                conn_ref,
                ErrorCode::NotFound,
                "no such conversation",
                reference,
            )
        };
        match command {
            Command::Hello { .. } => self.error_to(
                conn_ref,
                ErrorCode::BadRequest,
                "this connection already said hello",
                reference,
            ),
            Command::Msg { id, conv, text } => {
                if text.len() > self.settings.limits.max_text_bytes {
                    return self.error_to(
                        conn_ref,
                        ErrorCode::TooLarge,
                        "text is over the size limit",
                        Some(&id),
                    );
                }
                let (conv, dest) = match (conv, who.role) {
                    (Some(conv), _) => match conv_of(&conv) {
                        Ok((conv, shard)) => (Some(conv), shard),
                        Err(()) => {
                            return self.error_to(
                                conn_ref,
                                ErrorCode::NotFound,
                                "no such conversation",
                                Some(&id),
                            )
                        }
                    },
                    (None, Role::Visitor) => (None, self.home_of(&tenant, &who.id)),
                    (None, Role::Agent) => {
                        return self.error_to(
                            conn_ref,
                            ErrorCode::BadRequest,
                            "an agent must name a `conv`",
                            Some(&id),
                        )
                    }
                };
                let submit = Submit {
                    tenant,
                    visitor: (who.role == Role::Visitor).then_some(profile),
                    sender: who,
                    sender_name: name,
                    conn: conn_ref,
                    client_id: Arc::from(&*id),
                    conv,
                    text: Arc::from(&*text),
                };
                self.send(dest, Envelope::Submit(Box::new(submit)));
            }
            Command::Recv { conv, seq } => match conv_of(&conv) {
                Ok((conv, shard)) => self.send(
                    shard,
                    Envelope::Recv {
                        tenant,
                        who,
                        conv,
                        seq,
                        conn: conn_ref,
                        reference: reference.map(Arc::from),
                    },
                ),
                Err(()) => not_found(),
            },
            Command::Sync { conv, after } => match conv_of(&conv) {
                Ok((conv, shard)) => self.send(
                    shard,
                    Envelope::Sync {
                        tenant,
                        who,
                        conn: conn_ref,
                        reference: reference.map(Arc::from),
                        conv,
                        after,
                    },
                ),
                Err(()) => not_found(),
            },
            Command::History {
                conv,
                before,
                limit,
                reference: r,
            } => match conv_of(&conv) {
                Ok((conv, shard)) => self.send(
                    shard,
                    Envelope::History {
                        tenant,
                        who,
                        conn: conn_ref,
                        conv,
                        before,
                        limit,
                        reference: r.map(|r| Arc::from(&*r)),
                    },
                ),
                Err(()) => not_found(),
            },
            command @ (Command::Typing { .. } | Command::Read { .. }) => {
                let (conv, signal) = match command {
                    Command::Typing { conv, on } => (conv, Signal::Typing(on)),
                    Command::Read { conv, seq } => (conv, Signal::Read(seq)),
                    _ => unreachable!("matched above"),
                };
                match conv_of(&conv) {
                    Ok((conv, shard)) => self.send(
                        shard,
                        Envelope::Signal {
                            tenant,
                            who,
                            conn: conn_ref,
                            reference: reference.map(Arc::from),
                            conv,
                            signal,
                        },
                    ),
                    Err(()) => not_found(),
                }
            }
            Command::Status { status } => {
                if who.role != Role::Agent {
                    return self.error_to(
                        conn_ref,
                        ErrorCode::Forbidden,
                        "only agents have a status",
                        reference,
                    );
                }
                let status = match status {
                    Availability::Online => AgentStatus::Online,
                    Availability::Away => AgentStatus::Away,
                };
                self.send(
                    self.router_of(&tenant),
                    Envelope::AgentStatus {
                        tenant,
                        agent: who.id,
                        status,
                    },
                );
            }
            Command::Transfer { conv, to } => {
                if who.role != Role::Agent {
                    return self.error_to(
                        conn_ref,
                        ErrorCode::Forbidden,
                        "only agents transfer conversations",
                        reference,
                    );
                }
                let to = match to {
                    Some(to) if !is_valid_user_id(&to) => {
                        return self.error_to(
                            conn_ref,
                            ErrorCode::NotFound,
                            "no such agent is connected",
                            reference,
                        )
                    }
                    to => to.map(|t| UserId::from(&*t)),
                };
                match conv_of(&conv) {
                    Ok((conv, shard)) => self.send(
                        shard,
                        Envelope::TransferRequest {
                            tenant,
                            agent: who.id,
                            conn: conn_ref,
                            reference: reference.map(Arc::from),
                            conv,
                            to,
                        },
                    ),
                    Err(()) => not_found(),
                }
            }
            Command::Close { conv } => match (conv, who.role) {
                (Some(conv), _) => match conv_of(&conv) {
                    Ok((conv, shard)) => self.send(
                        shard,
                        Envelope::Close {
                            tenant,
                            who,
                            conn: conn_ref,
                            reference: reference.map(Arc::from),
                            conv: Some(conv),
                        },
                    ),
                    Err(()) => not_found(),
                },
                (None, Role::Visitor) => {
                    let home = self.home_of(&tenant, &who.id);
                    self.send(
                        home,
                        Envelope::Close {
                            tenant,
                            who,
                            conn: conn_ref,
                            reference: reference.map(Arc::from),
                            conv: None,
                        },
                    )
                }
                (None, Role::Agent) => self.error_to(
                    conn_ref,
                    ErrorCode::BadRequest,
                    "an agent must name the `conv` to close",
                    reference,
                ),
            },
        }
        add(&self.metrics.frames_out, 0);
    }
}
