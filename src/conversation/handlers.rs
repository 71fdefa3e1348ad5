//! What a conversation's shard does with each message addressed to it.

use std::rc::Rc;
use std::sync::Arc;

use super::replay::ReplayMode;
use crate::ids::{ConnRef, ConvId, Participant, Role, TenantId, UserId};
use crate::model::{now_ms, AgentRef, ConvState, Event as LogEvent, VisitorMeta};
use crate::protocol::{server, ErrorCode};
use crate::shard::envelope::{Envelope, Signal, VisitorProfile};
use crate::shard::Shard;

use super::append::FollowUp;

impl Shard {
    /// A visitor connection said hello: list its open conversation (if any)
    /// for the welcome, replay it, and deliver it live from then on.
    pub fn on_visitor_attach(
        &self,
        tenant: TenantId,
        visitor: UserId,
        profile: VisitorProfile,
        conn: ConnRef,
    ) {
        let mut guard = self.convs.borrow_mut();
        let convs = &mut *guard;
        let state = convs
            .visitors
            .entry((tenant.clone(), visitor.clone()))
            .or_default();
        if !state.conns.contains(&conn) {
            state.conns.push(conn);
        }
        state.profile = profile;
        let open = state.open_conv.clone();
        self.conn_bound(
            conn.shard,
            Envelope::WelcomeList {
                conn: conn.id,
                convs: open.iter().cloned().collect(),
            },
        );
        if let Some(id) = open {
            let who = Participant {
                role: Role::Visitor,
                id: visitor,
            };
            match convs.convs.get_mut(&(tenant, id.clone())) {
                Some(conv) => {
                    self.start_replay(conv, who, conn, ReplayMode::Welcome);
                    // A queued visitor's new connection learns where it stands.
                    if let (ConvState::Queued, Some(position)) =
                        (&conv.meta.state, conv.queue_position)
                    {
                        self.frame_to(conn, server::queue(id.as_str(), position));
                    }
                }
                None => self.conn_bound(
                    conn.shard,
                    Envelope::Snapshot {
                        conn: conn.id,
                        conv: id,
                        summary: None,
                        frames: Vec::new(),
                        credit_from: None,
                    },
                ),
            }
        }
    }

    /// A visitor connection closed.
    pub fn on_visitor_detach(&self, tenant: TenantId, visitor: UserId, conn: ConnRef) {
        let mut guard = self.convs.borrow_mut();
        let convs = &mut *guard;
        let key = (tenant.clone(), visitor.clone());
        let Some(state) = convs.visitors.get_mut(&key) else {
            return;
        };
        state.conns.retain(|c| *c != conn);
        if let Some(open) = state.open_conv.clone() {
            if let Some(conv) = convs.convs.get_mut(&(tenant.clone(), open)) {
                conv.unsubscribe_conn(conn);
            }
        }
        convs.forget_visitor_if_idle(&tenant, &visitor);
    }

    /// Answers a request about a conversation this shard does not hold:
    /// closed (if the store knows it) or unknown.
    fn absent(&self, tenant: TenantId, conv: ConvId, conn: ConnRef, reference: Option<Arc<str>>) {
        let shard = self.rc();
        glommio::spawn_local(async move {
            let store = shard.store.clone();
            let (t, c) = (tenant, conv);
            let found = glommio::executor()
                .spawn_blocking(move || store.conv(&t, &c))
                .await;
            let (code, message) = match found {
                Ok(Some(_)) => (ErrorCode::Closed, "the conversation is closed"),
                Ok(None) => (ErrorCode::NotFound, "no such conversation"),
                Err(e) => {
                    tracing::error!(error = %e, "reading a conversation failed");
                    (
                        ErrorCode::Unavailable,
                        "could not read the conversation, retry later",
                    )
                }
            };
            shard.error_to(conn, code, message, reference.as_deref());
        })
        .detach();
    }

    /// A receipt cursor.
    pub fn on_recv(
        &self,
        tenant: TenantId,
        who: Participant,
        conv_id: ConvId,
        seq: u64,
        conn: ConnRef,
        reference: Option<Arc<str>>,
    ) {
        let mut convs = self.convs.borrow_mut();
        match convs.get_mut(&tenant, &conv_id) {
            Some(conv) if conv.may_read(&who) => {
                let seq = seq.min(conv.durable_seq);
                let cursor = conv.cursors.entry(who.clone()).or_insert(0);
                if seq > *cursor {
                    *cursor = seq;
                    self.appender.cursor_changed(&tenant, &conv_id, &who, seq);
                }
            }
            Some(_) => {
                drop(convs);
                self.error_to(
                    conn,
                    ErrorCode::Forbidden,
                    "not a participant of this conversation",
                    reference.as_deref(),
                );
            }
            // A cursor for a closed conversation no longer matters; an
            // unknown one is answered like any other frame.
            None => {
                drop(convs);
                self.absent_unless_closed(tenant, conv_id, conn, reference);
            }
        }
    }

    fn absent_unless_closed(
        &self,
        tenant: TenantId,
        conv: ConvId,
        conn: ConnRef,
        reference: Option<Arc<str>>,
    ) {
        let shard = self.rc();
        glommio::spawn_local(async move {
            let store = shard.store.clone();
            let (t, c) = (tenant, conv);
            if let Ok(None) = glommio::executor()
                .spawn_blocking(move || store.conv(&t, &c))
                .await
            {
                shard.error_to(
                    conn,
                    ErrorCode::NotFound,
                    "no such conversation",
                    reference.as_deref(),
                );
            }
        })
        .detach();
    }

    /// `typing` or `read`: forwarded to the other participants' connections.
    pub fn on_signal(
        &self,
        tenant: TenantId,
        who: Participant,
        conn: ConnRef,
        conv_id: ConvId,
        signal: Signal,
        reference: Option<Arc<str>>,
    ) {
        let mut convs = self.convs.borrow_mut();
        let Some(conv) = convs.get_mut(&tenant, &conv_id) else {
            drop(convs);
            return self.absent(tenant, conv_id, conn, reference);
        };
        if let Err((code, message)) = conv.check_writable(&who) {
            drop(convs);
            return self.error_to(conn, code, message, reference.as_deref());
        }
        let frame = match signal {
            Signal::Typing(on) => {
                server::typing(conv_id.as_str(), on, who.role.as_str(), who.id.as_str())
            }
            Signal::Read(seq) => {
                server::read(conv_id.as_str(), seq, who.role.as_str(), who.id.as_str())
            }
        };
        let recipients: Vec<ConnRef> = conv
            .subs
            .iter()
            .filter(|s| s.who != who)
            .map(|s| s.conn)
            .collect();
        drop(convs);
        self.fan_out(recipients, &frame);
    }

    /// `close`, by the visitor or the assigned agent.
    pub fn on_close(
        &self,
        tenant: TenantId,
        who: Participant,
        conn: ConnRef,
        conv: Option<ConvId>,
        reference: Option<Arc<str>>,
    ) {
        // A `msg` sent before the close may still be in its dedupe lookup:
        // it must land in the conversation first, as its sender meant, not
        // be refused (agent) or open a new conversation (visitor).
        if let Some(target) = self.appender.lookups_target() {
            let shard = self.rc();
            glommio::spawn_local(async move {
                shard.appender.lookups_reach(target).await;
                shard.close_now(tenant, who, conn, conv, reference);
            })
            .detach();
            return;
        }
        self.close_now(tenant, who, conn, conv, reference);
    }

    /// `close`, once the messages sent before it are accepted.
    fn close_now(
        &self,
        tenant: TenantId,
        who: Participant,
        conn: ConnRef,
        conv: Option<ConvId>,
        reference: Option<Arc<str>>,
    ) {
        let mut guard = self.convs.borrow_mut();
        let convs = &mut *guard;
        let conv_id = match conv {
            Some(conv) => conv,
            None => match convs
                .visitors
                .get(&(tenant.clone(), who.id.clone()))
                .and_then(|v| v.open_conv.clone())
            {
                Some(open) if who.role == Role::Visitor => open,
                _ => {
                    drop(guard);
                    return self.error_to(
                        conn,
                        ErrorCode::NotFound,
                        "no open conversation",
                        reference.as_deref(),
                    );
                }
            },
        };
        let Some(conv) = convs.convs.get_mut(&(tenant.clone(), conv_id.clone())) else {
            drop(guard);
            return self.absent(tenant, conv_id, conn, reference);
        };
        if let Err((code, message)) = conv.check_writable(&who) {
            drop(guard);
            return self.error_to(conn, code, message, reference.as_deref());
        }
        conv.meta.state = ConvState::Closed;
        self.appender.conv_changed(&tenant, &conv_id);
        self.push_system(
            conv,
            LogEvent::Closed(Some((who.role.into(), who.id.clone()))),
            FollowUp::Closed,
        );
        let visitor = conv.meta.visitor.clone();
        if let Some(state) = convs.visitors.get_mut(&(tenant.clone(), visitor.clone())) {
            if state.open_conv.as_ref() == Some(&conv_id) {
                state.open_conv = None;
            }
        }
        convs.forget_visitor_if_idle(&tenant, &visitor);
        drop(guard);
        self.send(
            self.router_of(&tenant),
            Envelope::ConvClosed {
                tenant,
                conv: conv_id,
            },
        );
    }

    /// `transfer`: checked here (the conversation's shard knows who it is
    /// assigned to), decided by the tenant's router.
    pub fn on_transfer_request(
        &self,
        tenant: TenantId,
        agent: UserId,
        conn: ConnRef,
        conv_id: ConvId,
        to: Option<UserId>,
        reference: Option<Arc<str>>,
    ) {
        let mut convs = self.convs.borrow_mut();
        let Some(conv) = convs.get_mut(&tenant, &conv_id) else {
            drop(convs);
            return self.absent(tenant, conv_id, conn, reference);
        };
        let refusal = match &conv.meta.state {
            ConvState::Closed => Some((ErrorCode::Closed, "the conversation is closed")),
            ConvState::Assigned(a) if a.id == agent => None,
            _ => Some((
                ErrorCode::Forbidden,
                "the conversation is not assigned to you",
            )),
        };
        drop(convs);
        if let Some((code, message)) = refusal {
            return self.error_to(conn, code, message, reference.as_deref());
        }
        if to.as_ref() == Some(&agent) {
            return self.error_to(
                conn,
                ErrorCode::BadRequest,
                "cannot transfer a conversation to yourself",
                reference.as_deref(),
            );
        }
        self.send(
            self.router_of(&tenant),
            Envelope::Transfer {
                tenant,
                conv: conv_id,
                from: agent,
                to,
                conn,
                reference,
            },
        );
    }

    /// The router assigned the conversation to `agent`.
    pub fn on_assign(
        &self,
        tenant: TenantId,
        conv_id: ConvId,
        agent: AgentRef,
        conns: Vec<ConnRef>,
        previous: Option<UserId>,
    ) {
        let mut convs = self.convs.borrow_mut();
        let Some(conv) = convs
            .get_mut(&tenant, &conv_id)
            .filter(|c| c.meta.state != ConvState::Closed)
        else {
            drop(convs);
            return self.send(
                self.router_of(&tenant),
                Envelope::AssignRejected {
                    tenant,
                    conv: conv_id,
                },
            );
        };
        let now = now_ms();
        conv.queue_position = None;
        conv.meta.state = ConvState::Assigned(agent.clone());
        conv.meta.assigned_ms = now;
        conv.meta.served_by = Some(agent.id.clone());
        conv.meta.queue_front = false;
        conv.meta.excluded_agent = None;
        self.appender.conv_changed(&tenant, &conv_id);
        // A newly assigned agent receives the whole log: its cursor starts at 0.
        let who = Participant {
            role: Role::Agent,
            id: agent.id.clone(),
        };
        conv.cursors.insert(who.clone(), 0);
        self.appender.cursor_changed(&tenant, &conv_id, &who, 0);
        conv.unsubscribe(&who);
        let visitor = conv.meta.visitor.clone();
        self.push_system(
            conv,
            LogEvent::Assigned(agent.clone()),
            FollowUp::Assigned {
                agent: agent.id.clone(),
                conns,
                previous,
            },
        );
        drop(convs);
        self.appender.visitor_changed(
            &tenant,
            &visitor,
            VisitorMeta {
                last_agent: Some((agent.id, now)),
            },
        );
    }

    /// The router put the conversation back in the queue; `excluded` may
    /// not get it back by routing while it waits.
    pub fn on_requeue(
        &self,
        tenant: TenantId,
        conv_id: ConvId,
        previous: UserId,
        excluded: Option<UserId>,
    ) {
        let mut convs = self.convs.borrow_mut();
        let Some(conv) = convs
            .get_mut(&tenant, &conv_id)
            .filter(|c| c.meta.state != ConvState::Closed)
        else {
            return;
        };
        conv.meta.state = ConvState::Queued;
        conv.queue_position = None;
        conv.meta.queued_ms = now_ms();
        conv.meta.queue_front = true;
        conv.meta.excluded_agent = excluded;
        self.appender.conv_changed(&tenant, &conv_id);
        self.push_system(conv, LogEvent::Queued, FollowUp::Requeued { previous });
    }

    /// A queued visitor's position: to its connections.
    pub fn on_queue_position(&self, tenant: TenantId, conv_id: ConvId, position: u32) {
        let mut convs = self.convs.borrow_mut();
        let Some(conv) = convs.convs.get_mut(&(tenant, conv_id.clone())) else {
            return;
        };
        if conv.meta.state != ConvState::Queued {
            return;
        }
        conv.queue_position = Some(position);
        let recipients: Vec<ConnRef> = conv
            .subs
            .iter()
            .filter(|s| s.who.role == Role::Visitor)
            .map(|s| s.conn)
            .collect();
        drop(convs);
        self.fan_out(recipients, &server::queue(conv_id.as_str(), position));
    }

    /// A new connection of the assigned agent.
    pub fn on_agent_subscribe(
        &self,
        tenant: TenantId,
        conv_id: ConvId,
        agent: UserId,
        conn: ConnRef,
    ) {
        let mut convs = self.convs.borrow_mut();
        match convs.get_mut(&tenant, &conv_id) {
            Some(conv) if conv.agent() == Some(&agent) => {
                self.start_replay(
                    conv,
                    Participant {
                        role: Role::Agent,
                        id: agent,
                    },
                    conn,
                    ReplayMode::Welcome,
                );
            }
            _ => self.conn_bound(
                conn.shard,
                Envelope::Snapshot {
                    conn: conn.id,
                    conv: conv_id,
                    summary: None,
                    frames: Vec::new(),
                    credit_from: None,
                },
            ),
        }
    }

    /// An agent connection closed.
    pub fn on_agent_unsubscribe(&self, tenant: TenantId, conv_id: ConvId, conn: ConnRef) {
        if let Some(conv) = self.convs.borrow_mut().get_mut(&tenant, &conv_id) {
            conv.unsubscribe_conn(conn);
        }
    }
}

/// Keeps `Rc` in scope for readers of the spawn sites above.
#[allow(dead_code)]
type ShardRc = Rc<Shard>;
