//! Pure SIP core: stream/datagram framing, message parsing and building (a thin wrapper over
//! rsip 0.4 plus our own address tokenizer), header edits for the B2BUA legs, responses,
//! credential redaction for logs, and signed flow tokens for edge Contacts.
//!
//! No I/O, clocks or randomness: bytes, keys and tags come in as arguments.
//!
//! - [`framing`]: RFC 3261 §18.3 Content-Length framing + RFC 5626 §3.5.1 keep-alives.
//! - [`message`]: [`SipMessage`] (parse, `to_bytes`, header reads).
//! - [`headers`]: Via/Contact/Route/Record-Route/Max-Forwards/Expires edits.
//! - [`response`]: responses with `Warning: 399`, ACK for non-2xx, CANCEL.
//! - [`uri`]: [`SipUri`], [`NameAddr`], [`Via`] values.
//! - [`redact`]: Authorization values for logs.
//! - [`flow_token`]: HMAC-signed flow tokens (RFC 5626 §5.2 style).
//! - `quirks`: pre-normalisation before rsip, one file per rsip quirk.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod flow_token;
pub mod framing;
pub mod headers;
pub mod message;
pub(crate) mod quirks;
pub mod redact;
pub mod response;
pub mod uri;

pub use flow_token::{FlowToken, FlowTokenError, FlowTokenKey};
pub use framing::{DatagramFrame, Frame, FramingError, FramingLimits, StreamFramer};
pub use message::{CSeq, ContactList, MessageError, Method, SipMessage};
pub use uri::{NameAddr, Param, Params, SipUri, UriError, UriScheme, Via};
