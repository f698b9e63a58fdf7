//! What answers a request the session handed out: an upstream (the proxy), a worker thread
//! (`proactor-pool`) or the handler here, once the request has passed its authentication check
//! (`--auth`, possibly held for a verifier's verdict); and the access line of every exchange. This is the
//! caller's side of the protocol core: the session only reports heads and exchanges.

use std::net::IpAddr;

use super::Env;
use crate::http::access::Line;
use crate::http::request::{Method, Request};
use crate::http::response::{Body, Output, Reply};
#[cfg(feature = "proxy")]
use crate::http::session::request_line;
use crate::http::session::{Exchange, Session};
use crate::logging;

/// Where the answer to a request comes from, when not from here at once.
pub enum Routed {
    /// Answered (or refused) already.
    Answered,
    /// Forwarded upstream: the connection starts this relay.
    #[cfg(feature = "proxy")]
    Forward(Box<super::relay::Relay>),
    /// The head (copied) goes to a worker thread.
    #[cfg(feature = "models")]
    Defer(Box<[u8]>),
    /// The head (copied) waits for a verifier's verdict on its credentials; then
    /// [`verified`] routes it.
    #[cfg(feature = "auth")]
    Verify(Box<[u8]>),
}

/// Routes one request head of connection `generation`: the authentication check first, then
/// the proxy's prefixes, then the workers or the handler.
pub fn route(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    head: &[u8],
    req: &Request<'_>,
    env: &mut Env<'_>,
    #[cfg_attr(not(feature = "auth"), allow(unused_variables))] generation: u32,
) -> Routed {
    #[cfg(feature = "auth")]
    let strip = {
        use crate::auth::Check;
        let gate = env.auth;
        match gate.map(|g| g.check(req, peer, env.key, generation, env.ctx.now)) {
            None | Some(Check::Open) => false,
            Some(Check::Pass) => !gate.is_some_and(|g| g.forward()),
            Some(Check::Deny(reply)) => return answer(session, out, peer, req, env, reply),
            Some(Check::Wait) => return Routed::Verify(head.into()),
        }
    };
    #[cfg(not(feature = "auth"))]
    let strip = false;
    pass(session, out, peer, head, req, env, strip)
}

/// The verdict on the credentials of a request held since [`route`] said `Verify`.
#[cfg(feature = "auth")]
pub fn verified(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    head: &[u8],
    req: &Request<'_>,
    env: &mut Env<'_>,
    ok: bool,
) -> Routed {
    let Some(gate) = env.auth else {
        return Routed::Answered; // a verdict comes only where there is a gate
    };
    if !ok {
        return answer(session, out, peer, req, env, gate.refuse(req));
    }
    pass(session, out, peer, head, req, env, !gate.forward())
}

/// Answers `req` with `reply` at once.
fn answer(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    req: &Request<'_>,
    env: &mut Env<'_>,
    reply: crate::http::response::Reply<'_>,
) -> Routed {
    let x = session.respond(reply, out, &env.ctx, parsed_line(req));
    log(env, peer, &x, None);
    Routed::Answered
}

/// The access line's request, from the parsed request.
fn parsed_line<'r>(req: &Request<'r>) -> Line<'r> {
    Line::Parsed {
        method: req.method_str,
        target: req.target,
        version: req.version.as_str(),
    }
}

/// Routes a request that may go on: the proxy's prefixes first, then the workers or the
/// handler. `strip`: the Authorization field was ours to check and does not go upstream.
fn pass(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    // Only forwarding and deferring need the head's bytes.
    #[cfg_attr(
        not(any(feature = "proxy", feature = "models")),
        allow(unused_variables)
    )]
    head: &[u8],
    req: &Request<'_>,
    env: &mut Env<'_>,
    #[cfg_attr(not(feature = "proxy"), allow(unused_variables))] strip: bool,
) -> Routed {
    if env.health == Some(req.path()) && req.method != Method::Other {
        // A load balancer's check: no disk, no upstream, no worker thread.
        let reply = Reply {
            status: 200,
            headers: b"Content-Type: text/plain\r\nCache-Control: no-store\r\n",
            len: 3,
            body: Body::Bytes(b"ok\n"),
        };
        return answer(session, out, peer, req, env, reply);
    }
    #[cfg(feature = "tls")]
    if !env.secure
        && let Some(https) = env.https
        && https.redirect
    {
        redirect_https(session, out, peer, req, https.port, env);
        return Routed::Answered;
    }
    #[cfg(feature = "proxy")]
    if let Some(routed) = forward(session, out, peer, head, req, env, strip) {
        return routed;
    }
    #[cfg(feature = "models")]
    if env.workers.is_some() {
        session.await_answer(false);
        return Routed::Defer(head.into());
    }
    // (Not `answer`: the reply borrows the handler, which is in `env`.)
    let reply = env.handler.handle(req, env.ctx.now);
    let x = session.respond(reply, out, &env.ctx, parsed_line(req));
    log(env, peer, &x, None);
    Routed::Answered
}

/// A request whose path is under a proxy prefix: forwarded, or refused (400) when its spelling
/// or its framing is one an upstream could read differently from us. `None`: not proxied.
#[cfg(feature = "proxy")]
fn forward(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    head: &[u8],
    req: &Request<'_>,
    env: &mut Env<'_>,
    strip: bool,
) -> Option<Routed> {
    use crate::proxy::message::{self, ForwardedTrust};
    use crate::proxy::route::{RouteMatch, route_for};

    let route = match route_for(env.routes, req.path()) {
        RouteMatch::Local => return None,
        RouteMatch::Forward(route) => route,
        RouteMatch::Refuse => {
            log::debug!("proxied path not in normal form: {:?}", req.target);
            return Some(refuse(session, out, peer, head, env));
        }
    };
    // Only a request without a Host is sent one naming the upstream (no string per request).
    let fallback = match req.host {
        Some(host) if !host.is_empty() => String::new(),
        _ => env.routes[route]
            .upstreams
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    let trust = if env.trust_forwarded {
        ForwardedTrust::Chain
    } else {
        ForwardedTrust::Peer
    };
    let mut relay = env.pools.relay();
    let up_head = relay.head_buf();
    let scheme: &[u8] = if env.secure { b"https" } else { b"http" };
    if let Err(why) = message::request_head(up_head, head, req, peer, &fallback, trust, scheme) {
        log::debug!("not forwarded: {why}");
        env.pools.put_relay(relay);
        return Some(refuse(session, out, peer, head, env));
    }
    if strip {
        message::remove_field(up_head, b"authorization");
    }
    // An upgrade takes a place among the tunnels now (handshakes in flight count); over the
    // limit it is answered 503 and the connection goes on.
    let upgrade = if req.upgrade {
        match env.tunnels.take() {
            Some(place) => Some(place),
            None => {
                log::debug!("upgrade refused: --max-tunnels reached");
                env.pools.put_relay(relay);
                let reply =
                    crate::http::response::Reply::text(503, b"Content-Type: text/plain\r\n");
                let x = session.respond(reply, out, &env.ctx, Line::Raw(request_line(head)));
                log(env, peer, &x, None);
                return Some(Routed::Answered);
            }
        }
    } else {
        None
    };
    session.await_answer(true);
    relay.start(super::relay::Start {
        routes: std::sync::Arc::clone(env.routes),
        route,
        method: req.method,
        has_body: req.body != crate::http::request::BodyFraming::None,
        line: request_line(head),
        upgrade,
        headers: env.handler.proxied_headers(req.path()),
    });
    Some(Routed::Forward(relay))
}

#[cfg(feature = "proxy")]
fn refuse(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    head: &[u8],
    env: &mut Env<'_>,
) -> Routed {
    let x = session.refuse(400, out, &env.ctx, Line::Raw(request_line(head)));
    log(env, peer, &x, None);
    Routed::Answered
}

/// `--redirect-https` on a plain listener: GET and HEAD get 308 to the same target over HTTPS
/// (the Host's name, the TLS listener's port); anything else is 400, as a body sent in the
/// clear cannot be taken back.
#[cfg(feature = "tls")]
fn redirect_https(
    session: &mut Session,
    out: &mut Output,
    peer: Option<IpAddr>,
    req: &Request<'_>,
    port: u16,
    env: &mut Env<'_>,
) {
    use crate::http::request::Method;
    use crate::http::response::{Body, Reply};
    let line = parsed_line(req);
    let host = req.host.and_then(host_name);
    let (true, Some(host)) = (matches!(req.method, Method::Get | Method::Head), host) else {
        let x = session.refuse(400, out, &env.ctx, line);
        log(env, peer, &x, None);
        return;
    };
    let mut headers = Vec::with_capacity(64 + host.len() + req.target.len());
    headers.extend_from_slice(b"Location: https://");
    headers.extend_from_slice(host);
    if port != 443 {
        headers.extend_from_slice(format!(":{port}").as_bytes());
    }
    if !req.target.starts_with('/') {
        headers.push(b'/');
    }
    headers.extend_from_slice(req.target.as_bytes());
    headers.extend_from_slice(b"\r\n");
    let reply = Reply {
        status: 308,
        headers: &headers,
        len: 0,
        body: Body::Empty,
    };
    let x = session.respond(reply, out, &env.ctx, line);
    log(env, peer, &x, None);
}

/// The name in a Host field, without its port; `None` unless it is a plain DNS name or IP
/// literal (the Location must not carry anything else).
#[cfg(feature = "tls")]
fn host_name(host: &[u8]) -> Option<&[u8]> {
    if host.first() == Some(&b'[') {
        let end = host.iter().position(|&b| b == b']')?;
        let v6 = &host[1..end];
        let ok = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b':' | b'.');
        return (!v6.is_empty() && v6.iter().all(ok)).then_some(&host[..=end]);
    }
    let name = host.split(|&b| b == b':').next().unwrap_or(host);
    let ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.');
    (!name.is_empty() && name.iter().all(ok)).then_some(name)
}

/// One access line for an exchange; `upstream` names the server a proxied answer came from.
pub fn log(env: &Env<'_>, peer: Option<IpAddr>, x: &Exchange<'_>, upstream: Option<&str>) {
    logging::access(peer, env.log_date, x, upstream);
}
