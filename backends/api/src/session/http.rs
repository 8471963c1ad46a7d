//! The HTTP/1.1 plaintext service (TechEmpower "plaintext" shape), parsed with httparse.

use std::mem::MaybeUninit;

use super::{Flow, Session};

/// Largest request head accepted; a longer one is answered with 431 and closed.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers one request may carry; more is answered with 431.
const MAX_HEADERS: usize = 64;

/// 200 on a kept-alive HTTP/1.1 connection.
pub const OK_KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringside\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
/// 200 on an HTTP/1.0 connection that asked for keep-alive.
pub const OK_KEEP_ALIVE_10: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringside\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, World!";
/// 200, then the connection closes.
pub const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringside\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
/// Malformed request.
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: ringside\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// Request head over [`MAX_HEAD`] or too many headers.
pub const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nServer: ringside\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// Any method but GET.
// The connection closes after 405: the refused request may carry a body we do not frame.
pub const NOT_ALLOWED: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\nServer: ringside\r\nAllow: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// One HTTP connection: answers pipelined GETs in order, keeps any incomplete request.
#[derive(Debug, Default)]
pub struct HttpSession {
    /// Bytes of a request head that has not arrived completely.
    partial: Vec<u8>,
    /// Set once the session answered with a closing response; later input is ignored.
    closed: bool,
}

impl HttpSession {
    /// A new session; allocates nothing until a request arrives in pieces.
    pub const fn new() -> HttpSession {
        HttpSession {
            partial: Vec::new(),
            closed: false,
        }
    }

    /// Bytes of incomplete input held.
    pub fn buffered(&self) -> usize {
        self.partial.capacity()
    }

    /// Answers every complete request in `buf`; returns how many bytes it consumed.
    fn answer(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            // The verdict on a request rests on its first MAX_HEAD + 1 bytes only, so it is
            // the same however the bytes were split into reads (an error past them would
            // otherwise be a 400 when read at once but a 431 when read in pieces).
            let rest = &buf[pos..(pos + MAX_HEAD + 1).min(buf.len())];
            // Uninitialised header slots: zeroing 64 of them (2 KiB) for every request
            // cost more than parsing a small request.
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(rest, &mut headers) {
                Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                    return self.refuse(TOO_LARGE, out, buf.len());
                }
                Ok(httparse::Status::Complete(n)) => {
                    pos += n;
                    let response = respond(&req);
                    out.extend_from_slice(response);
                    if !std::ptr::eq(response, OK_KEEP_ALIVE)
                        && !std::ptr::eq(response, OK_KEEP_ALIVE_10)
                    {
                        self.closed = true;
                        return buf.len();
                    }
                }
                Ok(httparse::Status::Partial) if rest.len() > MAX_HEAD => {
                    return self.refuse(TOO_LARGE, out, buf.len());
                }
                Ok(httparse::Status::Partial) => break,
                Err(httparse::Error::TooManyHeaders) => {
                    return self.refuse(TOO_LARGE, out, buf.len());
                }
                Err(_) => return self.refuse(BAD_REQUEST, out, buf.len()),
            }
        }
        pos
    }

    fn refuse(&mut self, response: &[u8], out: &mut Vec<u8>, consumed: usize) -> usize {
        out.extend_from_slice(response);
        self.closed = true;
        consumed
    }
}

/// Picks the response for one complete request head.
fn respond(req: &httparse::Request<'_, '_>) -> &'static [u8] {
    if req.method != Some("GET") {
        return NOT_ALLOWED;
    }
    let mut close = false;
    let mut keep_alive = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            // A GET with a body we would have to frame: refuse rather than misparse it.
            return BAD_REQUEST;
        }
    }
    match req.version {
        Some(1) if close => OK_CLOSE,
        Some(1) => OK_KEEP_ALIVE,
        _ if keep_alive && !close => OK_KEEP_ALIVE_10,
        _ => OK_CLOSE,
    }
}

impl Session for HttpSession {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow {
        if self.closed {
            return Flow::Close;
        }
        if self.partial.is_empty() {
            // Fast path: parse straight from the backend's buffer, keep only a leftover.
            let used = self.answer(input, out);
            if !self.closed && used < input.len() {
                self.partial.extend_from_slice(&input[used..]);
            }
        } else {
            self.partial.extend_from_slice(input);
            let partial = std::mem::take(&mut self.partial);
            let used = self.answer(&partial, out);
            if !self.closed && used < partial.len() {
                self.partial = partial;
                self.partial.drain(..used);
                // What is left is one incomplete head: release a large read's worth of room.
                self.partial.shrink_to(MAX_HEAD);
            }
        }
        if self.closed {
            self.partial = Vec::new();
            Flow::Close
        } else {
            Flow::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (String, Flow) {
        let mut s = HttpSession::new();
        let mut out = Vec::new();
        let mut flow = Flow::Continue;
        for c in chunks {
            flow = s.on_input(c, &mut out);
        }
        (String::from_utf8(out).unwrap(), flow)
    }

    const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn pipelined_requests_answered_in_order() {
        let mut input = Vec::new();
        for _ in 0..16 {
            input.extend_from_slice(GET);
        }
        let (out, flow) = run(&[&input]);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 16);
        assert_eq!(out.len(), 16 * OK_KEEP_ALIVE.len());
        assert_eq!(flow, Flow::Continue);
    }

    #[test]
    fn byte_at_a_time() {
        let chunks: Vec<&[u8]> = GET.chunks(1).collect();
        let (out, flow) = run(&chunks);
        assert_eq!(out.as_bytes(), OK_KEEP_ALIVE);
        assert_eq!(flow, Flow::Continue);
    }

    #[test]
    fn close_and_http10() {
        let (out, flow) =
            run(&[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(out.as_bytes(), OK_CLOSE, "nothing answered after close");
        assert_eq!(flow, Flow::Close);
        let (out, flow) = run(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert_eq!((out.as_bytes(), flow), (OK_CLOSE, Flow::Close));
        let (out, flow) = run(&[b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"]);
        assert_eq!((out.as_bytes(), flow), (OK_KEEP_ALIVE_10, Flow::Continue));
    }

    #[test]
    fn errors_close() {
        assert_eq!(
            run(&[b"GARBAGE\r\n\r\n"]),
            (String::from_utf8_lossy(BAD_REQUEST).into(), Flow::Close)
        );
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 16 * 1024));
        let (out, flow) = run(&[&big]);
        assert_eq!((out.as_bytes(), flow), (TOO_LARGE, Flow::Close));
        let (out, flow) = run(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"]);
        assert_eq!((out.as_bytes(), flow), (NOT_ALLOWED, Flow::Close));
    }

    #[test]
    fn partial_is_released_after_completion() {
        let mut s = HttpSession::new();
        let mut out = Vec::new();
        s.on_input(&GET[..10], &mut out);
        assert!(s.buffered() > 0);
        s.on_input(&GET[10..], &mut out);
        assert_eq!(out, OK_KEEP_ALIVE);
        assert_eq!(s.partial.len(), 0);
    }
}
