//! HTTP/1.1 keep-alive GETs, pipelined: replies parsed with `httparse`, framed with
//! Content-Length (or, on a closing reply, by EOF), counted in order.

use super::{Connect, Defaults, Eof, Facts, Plugin, Sending};
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// Longest reply head accepted before the reply counts as garbled.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per reply.
const MAX_HEADERS: usize = 32;

/// The keep-alive GET every connection sends.
fn request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// The keep-alive HTTP workload: the request every connection sends.
#[derive(Debug)]
pub(crate) struct Http {
    request: Vec<u8>,
}

impl Plugin for Http {
    const FACTS: Facts = Facts {
        title: "HTTP GET keep-alive",
        describe: |_, depth| format!("HTTP GET keep-alive, depth {depth}"),
        service: backend_api::Service::Http,
        connect: Connect::KeepAlive,
        sending: Sending::Requests,
        sized: false,
        holds_idle: false,
        paced: true,
        conn_rate: None,
        defaults: Defaults {
            connections: 64,
            depth: 1,
            size: 0,
            idle: 0,
        },
    };
    type Conn = HttpState;

    fn new(cfg: &LoadConfig) -> Http {
        Http {
            request: request(&cfg.host, &cfg.path),
        }
    }

    fn conn(&self, _seed: u64) -> HttpState {
        HttpState::default()
    }

    #[inline]
    fn request(&self, _c: &mut HttpState, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn feed(
        &self,
        c: &mut HttpState,
        data: &[u8],
        outstanding: usize,
        on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        c.feed(data, outstanding, on_reply)
    }

    fn on_eof(&self, c: &mut HttpState) -> Result<Eof, ClientError> {
        Ok(match c.on_eof()? {
            true => Eof::Completed(c.take_status_error()),
            false => Eof::Nothing,
        })
    }

    fn server_closing(&self, c: &HttpState) -> bool {
        c.server_closing()
    }
}

/// One HTTP connection's reply parser.
#[derive(Debug, Default)]
pub(crate) struct HttpState {
    /// Bytes of a reply head that arrived in pieces.
    partial: Vec<u8>,
    /// Inside a body: bytes still to skip.
    body_left: u64,
    in_body: bool,
    /// The body runs until the server closes.
    body_to_eof: bool,
    /// The reply being read is a failure (non-2xx status).
    status_error: Option<ClientError>,
    /// The current reply said `Connection: close`.
    close_after: bool,
    /// A closing reply completed: the server will close; nothing more may arrive.
    closing: bool,
}

/// What a reply head says about framing.
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, ClientError> {
    // Judge a head by its first MAX_HEAD + 1 bytes only, as many as a reply split across
    // reads keeps: the verdict must not depend on how the bytes arrived.
    let buf = &buf[..buf.len().min(MAX_HEAD + 1)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let mut head = Head {
                status: resp.code.unwrap_or(0),
                content_length: None,
                chunked: false,
                // HTTP/1.0 closes unless it says keep-alive.
                close: resp.version == Some(0),
            };
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    // Exactly one length, all digits: with two (even equal ones), a list or a
                    // sign, where the reply ends is ambiguous, and guessing would miscount.
                    let digits = h.value.trim_ascii();
                    let v = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|d| d.parse::<u64>().ok())
                        .ok_or(ClientError::GarbledReply)?;
                    if head.content_length.replace(v).is_some() {
                        return Err(ClientError::GarbledReply);
                    }
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    head.chunked = true;
                } else if h.name.eq_ignore_ascii_case("connection") {
                    for token in h.value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            head.close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            head.close = false;
                        }
                    }
                }
            }
            Ok(Some((n, head)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(ClientError::GarbledReply),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ClientError::GarbledReply),
    }
}

impl HttpState {
    pub(crate) fn server_closing(&self) -> bool {
        self.closing
    }

    fn finish(&mut self, on_reply: &mut impl FnMut(Option<ClientError>)) {
        self.in_body = false;
        self.body_to_eof = false;
        on_reply(self.status_error.take());
        if self.close_after {
            self.closing = true;
        }
    }

    fn start(&mut self, head: Head) -> Result<(), ClientError> {
        self.status_error =
            (!(200..300).contains(&head.status)).then_some(ClientError::HttpStatus(head.status));
        self.close_after = head.close;
        if head.chunked {
            // A GET benchmark target answers with fixed bodies; chunked framing is not
            // decoded here, and guessing would miscount replies.
            return Err(ClientError::NoContentLength);
        }
        match head.content_length {
            Some(n) => {
                self.body_left = n;
                self.in_body = true;
            }
            None if head.close => {
                self.body_to_eof = true;
                self.in_body = true;
            }
            None => return Err(ClientError::NoContentLength),
        }
        Ok(())
    }

    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        mut outstanding: usize,
        mut on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        let mut pos = 0;
        while pos < data.len() {
            if self.in_body {
                if self.body_to_eof {
                    return Ok(());
                }
                let take = self.body_left.min((data.len() - pos) as u64);
                self.body_left -= take;
                pos += take as usize;
                if self.body_left == 0 {
                    outstanding -= 1;
                    self.finish(&mut on_reply);
                }
                continue;
            }
            if self.closing || outstanding == 0 {
                return Err(ClientError::UnsolicitedData);
            }
            let rest = &data[pos..];
            let head = if self.partial.is_empty() {
                match parse_head(rest)? {
                    Some((n, head)) => {
                        pos += n;
                        head
                    }
                    None => {
                        self.partial.extend_from_slice(rest);
                        return Ok(());
                    }
                }
            } else {
                let old = self.partial.len();
                let add = rest.len().min(MAX_HEAD + 1 - old.min(MAX_HEAD));
                self.partial.extend_from_slice(&rest[..add]);
                match parse_head(&self.partial)? {
                    Some((n, head)) => {
                        pos += n - old;
                        self.partial.clear();
                        head
                    }
                    None => return Ok(()),
                }
            };
            self.start(head)?;
            if self.in_body && !self.body_to_eof && self.body_left == 0 {
                outstanding -= 1;
                self.finish(&mut on_reply);
            }
        }
        Ok(())
    }

    pub(crate) fn on_eof(&mut self) -> Result<bool, ClientError> {
        if self.in_body && self.body_to_eof {
            self.in_body = false;
            self.body_to_eof = false;
            self.closing = true;
            return Ok(true);
        }
        if self.in_body || !self.partial.is_empty() {
            return Err(ClientError::ShortReply);
        }
        Ok(false)
    }

    /// The error of the reply just completed at EOF (a body-to-EOF reply).
    pub(crate) fn take_status_error(&mut self) -> Option<ClientError> {
        self.status_error.take()
    }
}

/// What the load generator makes of `data` arriving in pieces cut at `cuts` (offsets, any
/// order, out-of-range ones ignored) with `outstanding` requests sent, then EOF: every
/// reply counted (with its error, if any), then the first error that ends the connection
/// or what EOF means (`true`: it completed a reply). For the fuzz target; panics if the
/// parser buffers more than a reply head.
#[doc(hidden)]
pub fn replies_for_fuzzing(
    data: &[u8],
    cuts: &[usize],
    outstanding: usize,
) -> (Vec<Option<ClientError>>, Result<bool, ClientError>) {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
    cuts.push(data.len());
    cuts.sort_unstable();
    let mut state = HttpState::default();
    let mut replies = Vec::new();
    let mut from = 0;
    for to in cuts {
        let left = outstanding - replies.len();
        let fed = state.feed(&data[from..to], left, |e| replies.push(e));
        assert!(
            state.partial.len() <= MAX_HEAD + 1,
            "reply parser holds {} bytes",
            state.partial.len()
        );
        if let Err(e) = fed {
            return (replies, Err(e));
        }
        from = to;
    }
    let eof = state.on_eof();
    if eof == Ok(true) {
        replies.push(state.take_status_error());
    }
    (replies, eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringside\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

    fn feed_all(
        s: &mut HttpState,
        chunks: &[&[u8]],
        outstanding: usize,
    ) -> Vec<Option<ClientError>> {
        let mut got = Vec::new();
        let mut left = outstanding;
        for c in chunks {
            s.feed(c, left, |e| got.push(e)).unwrap();
            left = outstanding - got.len();
        }
        got
    }

    #[test]
    fn pipelined_replies_split_anywhere_are_counted() {
        let all: Vec<u8> = OK.repeat(16);
        for split in [1, 5, 40, 97, 500] {
            let chunks: Vec<&[u8]> = all.chunks(split).collect();
            let got = feed_all(&mut HttpState::default(), &chunks, 16);
            assert_eq!(got.len(), 16, "split {split}");
            assert!(got.iter().all(Option::is_none));
        }
    }

    #[test]
    fn statuses_framing_and_closing() {
        let mut s = HttpState::default();
        let r = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            feed_all(&mut s, &[r], 1),
            vec![Some(ClientError::HttpStatus(503))]
        );

        let mut s = HttpState::default();
        let no_len = b"HTTP/1.1 200 OK\r\n\r\nabc";
        assert_eq!(s.feed(no_len, 1, |_| {}), Err(ClientError::NoContentLength));

        let mut s = HttpState::default();
        assert_eq!(
            s.feed(b"garbage\r\n\r\n", 1, |_| {}),
            Err(ClientError::GarbledReply)
        );

        // A closing reply framed by EOF completes at EOF.
        let mut s = HttpState::default();
        assert!(feed_all(
            &mut s,
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody"],
            1
        )
        .is_empty());
        assert_eq!(s.on_eof(), Ok(true));
        // A cut reply is short.
        let mut s = HttpState::default();
        s.feed(&OK[..50], 1, |_| {}).unwrap();
        assert_eq!(s.on_eof(), Err(ClientError::ShortReply));
        // Connection: close marks the server as closing; more data is unsolicited.
        let mut s = HttpState::default();
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(feed_all(&mut s, &[close], 2).len(), 1);
        assert!(s.server_closing());
        assert_eq!(s.feed(OK, 1, |_| {}), Err(ClientError::UnsolicitedData));
    }

    #[test]
    fn duplicate_or_conflicting_lengths_are_garbled() {
        for lengths in [
            "Content-Length: 13\r\nContent-Length: 13",
            "Content-Length: 13\r\ncontent-length: 5",
            "Content-Length: 13, 13",
            "Content-Length: +13",
            "Content-Length: ",
        ] {
            let reply = format!("HTTP/1.1 200 OK\r\n{lengths}\r\n\r\nHello, World!");
            let (replies, end) = replies_for_fuzzing(reply.as_bytes(), &[], 1);
            assert_eq!(
                (replies, end),
                (vec![], Err(ClientError::GarbledReply)),
                "{lengths:?}"
            );
        }
        let (replies, end) = replies_for_fuzzing(OK, &[7, 60], 1);
        assert_eq!((replies, end), (vec![None], Ok(false)));
    }

    #[test]
    fn an_oversized_head_is_garbled_however_it_arrives() {
        let mut reply = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        reply.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        reply.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let whole = replies_for_fuzzing(&reply, &[], 1);
        assert_eq!(whole, (vec![], Err(ClientError::GarbledReply)));
        for cut in [1, 100, MAX_HEAD, MAX_HEAD + 1, reply.len() - 1] {
            assert_eq!(replies_for_fuzzing(&reply, &[cut], 1), whole, "cut {cut}");
        }
    }
}
