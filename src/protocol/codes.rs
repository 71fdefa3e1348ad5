//! The error codes and WebSocket close codes of protocol v1.

/// The `code` of an `error` frame. After an error the connection stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, unknown `type`, missing or malformed field.
    BadRequest,
    /// The caller's identity does not allow this.
    Unauthorized,
    /// The caller may not act on this conversation (for example an agent
    /// naming a conversation not assigned to it).
    Forbidden,
    /// No such conversation, agent or entry; also another tenant's conversation.
    NotFound,
    /// A chat `text` over the configured limit.
    TooLarge,
    /// Too many messages: slow down. Repeated, the connection closes with 4429.
    RateLimited,
    /// The conversation is closed.
    Closed,
    /// The entry was not stored (for instance the disk failed): retry later
    /// with the same `id`.
    Unavailable,
    /// A bug or an unexpected condition in the gateway.
    Internal,
}

impl ErrorCode {
    /// Every code, for metrics labels.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Closed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as the protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Closed => "closed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The position of this code in [`ErrorCode::ALL`], for per-code counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// WebSocket close codes the gateway sends (RFC 6455 ones and protocol v1's own).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The gateway is shutting down: reconnect (to another instance or later).
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol violation.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame: protocol v1 is text only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A client that does not read its outbound frames (policy violation).
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// An internal failure while handling this connection.
    pub const INTERNAL: u16 = 1011;
    /// The first frame was not a JSON object, or a hello with neither token nor tenant.
    pub const MALFORMED_HELLO: u16 = 4400;
    /// Bad token, wrong algorithm, expired, unknown tenant, or a first frame that is not hello.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The tenant does not allow this `Origin`.
    pub const ORIGIN_NOT_ALLOWED: u16 = 4403;
    /// No hello within the hello timeout.
    pub const HELLO_TIMEOUT: u16 = 4408;
    /// Too many protocol errors or messages, after `rate_limited` warnings.
    pub const TOO_MANY: u16 = 4429;
}
