//! The echo service.

use super::{Flow, Session};

/// Returns every byte it receives, in order. Holds no state.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoSession;

impl Session for EchoSession {
    #[inline]
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow {
        out.extend_from_slice(input);
        Flow::Continue
    }
}
