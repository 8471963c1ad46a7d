//! Churn: one connection per request. Connect (from a spread source address on loopback),
//! send one GET with `Connection: close`, read the reply and then to EOF, close.
//!
//! The reply is parsed by the HTTP parser; this module owns the request and the rule
//! that a transaction completes at EOF, not at the end of the reply.

use super::http::HttpState;
use super::{Connect, Defaults, Eof, Facts, Plugin, Sending};
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// The churn workload: the closing GET each connection sends.
#[derive(Debug)]
pub(crate) struct Churn {
    request: Vec<u8>,
}

/// One churn connection: the reply parser, and the reply once it arrived (it counts at EOF).
#[derive(Debug, Default)]
pub(crate) struct ChurnConn {
    http: HttpState,
    reply: Option<Option<ClientError>>,
}

impl Plugin for Churn {
    const FACTS: Facts = Facts {
        title: "churn (a new connection per request)",
        describe: |_, _| "churn: a new connection per request".to_string(),
        service: backend_api::Service::Http,
        connect: Connect::PerRequest,
        sending: Sending::Requests,
        sized: false,
        holds_idle: false,
        paced: true,
        conn_rate: None,
        defaults: Defaults {
            connections: 50,
            depth: 1,
            size: 0,
            idle: 0,
        },
    };
    type Conn = ChurnConn;

    fn new(cfg: &LoadConfig) -> Churn {
        Churn {
            request: format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                cfg.path, cfg.host
            )
            .into_bytes(),
        }
    }

    fn conn(&self, _seed: u64) -> ChurnConn {
        ChurnConn::default()
    }

    fn request(&self, _c: &mut ChurnConn, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn feed(
        &self,
        c: &mut ChurnConn,
        data: &[u8],
        _outstanding: usize,
        _on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        // The reply is recorded, not reported: the transaction completes at EOF.
        let ChurnConn { http, reply } = c;
        let outstanding = usize::from(reply.is_none());
        http.feed(data, outstanding, |err| *reply = Some(err))
    }

    fn on_eof(&self, c: &mut ChurnConn) -> Result<Eof, ClientError> {
        if let Some(r) = c.reply.take() {
            return Ok(Eof::Completed(r));
        }
        // A reply framed by the close completes now; anything else was cut.
        match c.http.on_eof() {
            Ok(true) => Ok(Eof::Completed(c.http.take_status_error())),
            _ => Err(ClientError::ShortReply),
        }
    }
}
