//! The `user_data` of every SQE: which operation, and for connection operations which
//! table slot and which generation of that slot.
//!
//! Layout (most significant first): `op: 8 bits | generation: 24 bits | slot: 32 bits`.
//! A slot is only reused once no operation on its previous connection is in flight, so a
//! completion can never name a newer connection; the generation makes that checkable: a
//! completion whose generation differs from the slot's is stale and is dropped (and
//! counted in [`crate::Diagnostics`]) instead of being applied to whoever holds the slot now.

/// Generations wrap at 2^24.
pub(crate) const GEN_MASK: u32 = (1 << 24) - 1;

/// What a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Op {
    /// The stop eventfd's `PollAdd`.
    Stop = 1,
    /// Accept (one-shot or multishot) on the listener.
    Accept = 2,
    /// The `Timeout` that ends an accept pause.
    AcceptPause = 3,
    /// `AsyncCancel` aimed at the accept or the pause timeout.
    AcceptCancel = 4,
    /// `Close` of a connection's socket (its slot is already free).
    Close = 5,
    /// A connection's receive (one-shot or multishot).
    Recv = 6,
    /// A connection's send.
    Send = 7,
    /// `AsyncCancel` aimed at a connection's receive.
    CancelRecv = 8,
    /// `AsyncCancel` aimed at a connection's send.
    CancelSend = 9,
    /// A completion with nothing to apply (the cancel of an accept pause, say).
    Ignore = 10,
    /// A connection's `Shutdown(SHUT_WR)` (close policy).
    Shutdown = 11,
    /// A connection's setsockopt (`IORING_OP_URING_CMD`, fixed descriptors).
    SockOpt = 12,
    /// The `Timeout` that checks lingering connections' deadlines.
    LingerTick = 13,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Stop,
            2 => Op::Accept,
            3 => Op::AcceptPause,
            4 => Op::AcceptCancel,
            5 => Op::Close,
            6 => Op::Recv,
            7 => Op::Send,
            8 => Op::CancelRecv,
            9 => Op::CancelSend,
            10 => Op::Ignore,
            11 => Op::Shutdown,
            12 => Op::SockOpt,
            13 => Op::LingerTick,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub op: Op,
    pub gen: u32,
    pub slot: u32,
}

impl Token {
    /// A token for an operation that belongs to no connection.
    pub(crate) const fn shard(op: Op) -> Token {
        Token {
            op,
            gen: 0,
            slot: 0,
        }
    }

    /// A token for `op` on connection `slot` in generation `gen`.
    pub(crate) const fn conn(op: Op, slot: u32, gen: u32) -> Token {
        Token { op, gen, slot }
    }

    pub(crate) const fn encode(self) -> u64 {
        ((self.op as u64) << 56) | (((self.gen & GEN_MASK) as u64) << 32) | self.slot as u64
    }

    pub(crate) fn decode(user_data: u64) -> Option<Token> {
        Some(Token {
            op: Op::from_u8((user_data >> 56) as u8)?,
            gen: ((user_data >> 32) as u32) & GEN_MASK,
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_masks_generation() {
        for op in [Op::Stop, Op::Recv, Op::CancelSend] {
            let t = Token::conn(op, u32::MAX, GEN_MASK);
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        let wrapped = Token::conn(Op::Send, 7, GEN_MASK + 3);
        assert_eq!(Token::decode(wrapped.encode()).unwrap().gen, 2);
        assert_eq!(Token::decode(0), None, "user_data 0 is nobody's");
        assert_ne!(
            Token::conn(Op::Recv, 1, 1).encode(),
            Token::conn(Op::Recv, 1, 2).encode(),
            "a reused slot's operations are distinguishable"
        );
    }
}
