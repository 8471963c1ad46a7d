//! Churn: one connection per request. Connect (from a spread source address on loopback),
//! send one GET with `Connection: close`, read the reply and then to EOF, close.
//!
//! The reply is parsed by the HTTP parser; this module only owns the request and the rule
//! that a transaction completes at EOF, not at the end of the reply.

/// The closing GET each churn connection sends.
pub(crate) fn request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// How a churn transaction that reached EOF ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A complete reply arrived, then EOF.
    Complete(Option<crate::load::error::ClientError>),
    /// EOF came before a complete reply.
    Cut,
}

/// Decides a transaction's outcome at EOF from the reply recorded earlier (if the reply was
/// framed by Content-Length) or from the parser (if its body ran to EOF).
pub(crate) fn at_eof(
    recorded: Option<Option<crate::load::error::ClientError>>,
    proto: &mut super::Proto,
) -> Outcome {
    if let Some(r) = recorded {
        return Outcome::Complete(r);
    }
    match proto {
        super::Proto::Http(h) => match h.on_eof() {
            Ok(true) => Outcome::Complete(h.take_status_error()),
            _ => Outcome::Cut,
        },
        _ => Outcome::Cut,
    }
}
