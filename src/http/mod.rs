//! The HTTP/1.1 protocol core, free of I/O: request heads and framing (RFC 9112), the chunked
//! coding, response heads, dates, and the per-connection session that ties them together.

pub mod accept;
pub mod access;
pub mod chunked;
pub mod date;
pub mod request;
pub mod response;
pub mod session;
