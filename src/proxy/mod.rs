//! Forwarding chosen paths to upstream HTTP/1.1 servers.

pub mod message;
pub mod route;
pub mod upstream;
