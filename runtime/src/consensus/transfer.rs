//! Raft messages larger than one request, in pieces: a snapshot of a large cluster state (ten
//! thousand jobs encode to about 12 MB) would never reach a member that needs it, which would
//! then never catch up. With no IO: the group's shell sends what [`pack`] gives, and an
//! [`Assembly`] on the receiving member puts each message together again.
//!
//! A member sends at most one message in pieces to each other member at a time, one piece per
//! request, the next once the last was taken. A receiver holds at most one part-built message
//! per member, of at most [`MAX_ASSEMBLED`] bytes: a new message from that member replaces it,
//! and a piece that does not follow drops it. Raft resends what was lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::ReplicaId;

/// The largest message a member puts together from pieces (a snapshot of the cluster state).
pub const MAX_ASSEMBLED: u64 = 512 << 20;

/// One piece of a raft message, as the `consensus` service's `piece` request carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The group it belongs to.
    pub group: u64,
    /// The sending member.
    pub from: u64,
    /// The message's number among the sender's messages sent in pieces.
    pub message: u64,
    /// Where this piece starts in the message.
    pub offset: u64,
    /// The message's length.
    pub total: u64,
    /// The piece.
    pub bytes: serde_bytes::ByteBuf,
}

/// What goes in one request to a member: a batch of whole messages, or a piece of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packed {
    /// Whole messages whose sizes add up to at most the budget.
    Batch(Vec<serde_bytes::ByteBuf>),
    /// One message larger than the budget, in pieces of at most the budget.
    Pieces(Vec<Piece>),
}

/// Packs `messages` (encoded, in order) into requests of at most `budget` bytes of messages,
/// numbering each message sent in pieces from `next_message` on.
///
/// # Examples
/// ```
/// use colony_runtime::consensus::transfer::{Packed, pack};
///
/// let small = vec![1u8; 10];
/// let large = vec![2u8; 25];
/// let packed = pack(7, 1, &mut 0, vec![small.clone(), large], 16);
/// assert_eq!(packed[0], Packed::Batch(vec![small.into()]));
/// let Packed::Pieces(pieces) = &packed[1] else { panic!() };
/// assert_eq!(pieces.iter().map(|p| p.bytes.len()).collect::<Vec<_>>(), [16, 9]);
/// ```
pub fn pack(
    group: u64,
    from: u64,
    next_message: &mut u64,
    messages: Vec<Vec<u8>>,
    budget: usize,
) -> Vec<Packed> {
    let budget = budget.max(1);
    let mut packed = Vec::new();
    let mut batch: Vec<serde_bytes::ByteBuf> = Vec::new();
    let mut batch_bytes = 0;
    for message in messages {
        if message.len() > budget {
            if !batch.is_empty() {
                packed.push(Packed::Batch(std::mem::take(&mut batch)));
                batch_bytes = 0;
            }
            let number = *next_message;
            *next_message += 1;
            let total = message.len() as u64;
            let pieces = message
                .chunks(budget)
                .scan(0u64, |offset, chunk| {
                    let piece = Piece {
                        group,
                        from,
                        message: number,
                        offset: *offset,
                        total,
                        bytes: serde_bytes::ByteBuf::from(chunk.to_vec()),
                    };
                    *offset += chunk.len() as u64;
                    Some(piece)
                })
                .collect();
            packed.push(Packed::Pieces(pieces));
            continue;
        }
        if batch_bytes + message.len() > budget && !batch.is_empty() {
            packed.push(Packed::Batch(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
        batch_bytes += message.len();
        batch.push(serde_bytes::ByteBuf::from(message));
    }
    if !batch.is_empty() {
        packed.push(Packed::Batch(batch));
    }
    packed
}

/// Why a piece was not taken. The part-built message it belonged to is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    /// The message is larger than a member puts together.
    #[error("a message of {total} bytes in pieces exceeds the {limit} a member puts together")]
    TooLarge {
        /// Its announced length.
        total: u64,
        /// [`MAX_ASSEMBLED`].
        limit: u64,
    },
    /// The piece does not follow the one before (lost, reordered or duplicated); raft resends.
    #[error("a piece out of order: message {message} at {offset}, expected {expected:?}")]
    OutOfOrder {
        /// Its message's number.
        message: u64,
        /// Where it starts.
        offset: u64,
        /// The message and offset that would have followed, if one was being put together.
        expected: Option<(u64, u64)>,
    },
    /// The piece is empty, or runs past the message's announced length.
    #[error("a piece that does not fit its message's length")]
    Misshapen,
}

#[derive(Debug)]
struct Partial {
    message: u64,
    total: u64,
    bytes: Vec<u8>,
}

/// Puts messages sent in pieces together again, at most one per sending member. See the module
/// doc.
#[derive(Debug, Default)]
pub struct Assembly {
    partial: BTreeMap<ReplicaId, Partial>,
}

impl Assembly {
    /// Takes `piece` from `sender` (the member its connection authenticated); returns the whole
    /// message once its last piece arrived.
    ///
    /// # Errors
    /// [`PieceError`]: the piece was not taken, and the message it belonged to is dropped.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::consensus::ReplicaId;
    /// use colony_runtime::consensus::transfer::{Assembly, Packed, pack};
    ///
    /// let mut assembly = Assembly::default();
    /// let Packed::Pieces(pieces) = pack(7, 1, &mut 0, vec![vec![3u8; 40]], 16).remove(0) else {
    ///     panic!()
    /// };
    /// let mut whole = None;
    /// for piece in pieces {
    ///     whole = assembly.accept(ReplicaId(1), piece).unwrap();
    /// }
    /// assert_eq!(whole, Some(vec![3u8; 40]));
    /// ```
    pub fn accept(
        &mut self,
        sender: ReplicaId,
        piece: Piece,
    ) -> Result<Option<Vec<u8>>, PieceError> {
        let end = piece.offset.checked_add(piece.bytes.len() as u64);
        if piece.bytes.is_empty() || end.is_none_or(|end| end > piece.total) {
            self.partial.remove(&sender);
            return Err(PieceError::Misshapen);
        }
        if piece.total > MAX_ASSEMBLED {
            self.partial.remove(&sender);
            return Err(PieceError::TooLarge {
                total: piece.total,
                limit: MAX_ASSEMBLED,
            });
        }
        if piece.offset == 0 {
            // A new message replaces the one under way: the sender gave up on it.
            self.partial.insert(
                sender,
                Partial {
                    message: piece.message,
                    total: piece.total,
                    bytes: Vec::new(),
                },
            );
        }
        let partial = match self.partial.get_mut(&sender) {
            Some(p)
                if p.message == piece.message
                    && p.total == piece.total
                    && p.bytes.len() as u64 == piece.offset =>
            {
                p
            }
            other => {
                let expected = other.map(|p| (p.message, p.bytes.len() as u64));
                self.partial.remove(&sender);
                return Err(PieceError::OutOfOrder {
                    message: piece.message,
                    offset: piece.offset,
                    expected,
                });
            }
        };
        // Grows with what arrived, never with what a piece announces.
        partial.bytes.extend_from_slice(&piece.bytes);
        if partial.bytes.len() as u64 == partial.total {
            return Ok(self.partial.remove(&sender).map(|p| p.bytes));
        }
        Ok(None)
    }

    /// Drops what is under way from members `keep` does not keep (gone from the view).
    pub fn retain(&mut self, keep: impl Fn(ReplicaId) -> bool) {
        self.partial.retain(|r, _| keep(*r));
    }

    /// Bytes held in part-built messages.
    pub fn held(&self) -> usize {
        self.partial.values().map(|p| p.bytes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pieces_of(message: Vec<u8>, number: u64, budget: usize) -> Vec<Piece> {
        match pack(7, 1, &mut number.clone(), vec![message], budget).remove(0) {
            Packed::Pieces(p) => p,
            Packed::Batch(_) => panic!("fits one request"),
        }
    }

    #[test]
    fn batches_keep_their_order_and_stay_within_the_budget() {
        let messages: Vec<Vec<u8>> = [5, 5, 5, 20, 1, 10]
            .iter()
            .map(|n| vec![*n as u8; *n])
            .collect();
        let mut next = 4;
        let packed = pack(7, 1, &mut next, messages.clone(), 10);
        assert_eq!(next, 5, "one message went in pieces");
        let mut again = Vec::new();
        let mut assembly = Assembly::default();
        for p in packed {
            match p {
                Packed::Batch(b) => {
                    assert!(b.iter().map(|m| m.len()).sum::<usize>() <= 10);
                    again.extend(b.into_iter().map(|m| m.into_vec()));
                }
                Packed::Pieces(ps) => {
                    assert!(ps.iter().all(|p| p.bytes.len() <= 10 && p.message == 4));
                    for p in ps {
                        if let Some(m) = assembly.accept(ReplicaId(1), p).unwrap() {
                            again.push(m);
                        }
                    }
                }
            }
        }
        assert_eq!(again, messages);
    }

    #[test]
    fn a_new_message_replaces_the_one_under_way_and_a_gap_drops_it() {
        let mut a = Assembly::default();
        let first = pieces_of(vec![1; 30], 1, 10);
        let second = pieces_of(vec![2; 30], 2, 10);
        assert_eq!(a.accept(ReplicaId(1), first[0].clone()), Ok(None));
        assert_eq!(a.accept(ReplicaId(1), second[0].clone()), Ok(None));
        assert!(matches!(
            a.accept(ReplicaId(1), first[1].clone()),
            Err(PieceError::OutOfOrder {
                expected: Some((2, 10)),
                ..
            })
        ));
        assert_eq!(a.held(), 0, "dropped");
        // A gap: the message is dropped, the next one starts clean.
        assert_eq!(a.accept(ReplicaId(1), second[0].clone()), Ok(None));
        assert!(a.accept(ReplicaId(1), second[2].clone()).is_err());
        for p in &second {
            let _ = a.accept(ReplicaId(1), p.clone());
        }
        assert_eq!(a.held(), 0, "a complete message is handed out, not held");
        // Members are kept apart; a member gone from the view leaves nothing behind.
        assert_eq!(a.accept(ReplicaId(1), first[0].clone()), Ok(None));
        assert_eq!(a.accept(ReplicaId(2), second[0].clone()), Ok(None));
        a.retain(|r| r != ReplicaId(1));
        assert_eq!(a.held(), 10);
    }

    #[test]
    fn an_oversized_or_misshapen_piece_is_refused_without_allocating_what_it_announces() {
        let mut a = Assembly::default();
        let huge = Piece {
            group: 7,
            from: 1,
            message: 1,
            offset: 0,
            total: MAX_ASSEMBLED + 1,
            bytes: vec![0; 4].into(),
        };
        assert!(matches!(
            a.accept(ReplicaId(1), huge.clone()),
            Err(PieceError::TooLarge { .. })
        ));
        let past_end = Piece {
            total: 2,
            ..huge.clone()
        };
        assert_eq!(a.accept(ReplicaId(1), past_end), Err(PieceError::Misshapen));
        let empty = Piece {
            total: 2,
            bytes: Vec::new().into(),
            ..huge.clone()
        };
        assert_eq!(a.accept(ReplicaId(1), empty), Err(PieceError::Misshapen));
        let overflow = Piece {
            offset: u64::MAX,
            total: u64::MAX,
            ..huge
        };
        assert_eq!(a.accept(ReplicaId(1), overflow), Err(PieceError::Misshapen));
        // Announcing the limit holds only what arrived.
        let big = Piece {
            group: 7,
            from: 1,
            message: 2,
            offset: 0,
            total: MAX_ASSEMBLED,
            bytes: vec![0; 4].into(),
        };
        assert_eq!(a.accept(ReplicaId(1), big), Ok(None));
        assert_eq!(a.held(), 4);
    }

    proptest! {
        /// Any messages and budget come back whole and in order; any pieces in any order never
        /// panic and never hold more than arrived.
        #[test]
        fn messages_come_back_whole_and_junk_never_grows_memory(
            sizes in prop::collection::vec(1usize..200, 1..12),
            budget in 1usize..64,
            shuffled in prop::collection::vec((0u64..3, 0u64..300, 0u64..300, 0usize..40), 0..40),
        ) {
            let messages: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| vec![i as u8; *n]).collect();
            let mut again = Vec::new();
            let mut a = Assembly::default();
            for p in pack(7, 1, &mut 0, messages.clone(), budget) {
                match p {
                    Packed::Batch(b) => again.extend(b.into_iter().map(|m| m.into_vec())),
                    Packed::Pieces(ps) => for p in ps {
                        if let Some(m) = a.accept(ReplicaId(1), p).unwrap() {
                            again.push(m);
                        }
                    },
                }
            }
            prop_assert_eq!(again, messages);
            let mut arrived = 0;
            for (message, offset, total, len) in shuffled {
                arrived += len;
                let piece = Piece { group: 7, from: 2, message, offset, total, bytes: vec![0; len].into() };
                if let Ok(Some(m)) = a.accept(ReplicaId(2), piece) {
                    prop_assert_eq!(m.len() as u64, total);
                }
                prop_assert!(a.held() <= arrived);
            }
        }
    }
}
