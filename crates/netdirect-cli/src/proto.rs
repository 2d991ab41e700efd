//! The tiny control protocol `nd`'s perftest personas speak over the RDMA connection itself.
//!
//! # Connect
//! The client connects with 16 octets of MPA private data: `"NDP1"`, test id (u8), QP index
//! (u8), QP count (u8), protocol version 1 (u8), largest message size (u64 LE). The server
//! checks the test id (a mismatch is rejected with private data `"test mismatch"`), sizes its
//! receive ring from the message size, posts its receives, then accepts.
//!
//! # Messages
//! Every control message is a 64-octet Send: `"NDP1"`, type (u8), 3 octets zero, then four
//! u64 LE fields `a b c d` and 24 octets zero. Both sides keep their receives posted and
//! return receive credits (`Credit`) so that a Send never finds no receive (iWARP has no RNR
//! retry). On each QP, in order:
//!
//! | from | message | fields |
//! |---|---|---|
//! | client | `Hello` | a = inbox address, b = inbox length, c = remote token, d = receives posted |
//! | server | `HelloAck` | the same for the server's buffer |
//! | client | `Phase` | a = message size of the next measurement; b = 1 for a bidirectional (`-b`) one, else 0 |
//! | server | `PhaseAck` | (the server is ready: inbox cleared, receives posted) |
//! | client | `PhaseEnd` | a = operations completed (warm-up included), b = slots of `size` written from offset 0 |
//! | server | `PhaseEndAck` | a = data check: 0 not checked, 1 good, 2 bad; b = operations the server saw |
//! | client | `Bye` | (then both disconnect) |
//! | either | `Credit` | a = receives consumed and reposted so far |
//!
//! A bidirectional measurement (`-b`, bandwidth tests) is symmetric: after `PhaseAck` both sides
//! run the test at once, each toward the other. Each side, once its own requests completed, sends
//! `PhaseEnd` on every QP and `Result` on QP 0 (a = operations, b = peak, c = average bandwidth in
//! octets/s and d = seconds, the last three as f64 bits), keeps taking the peer's data until the
//! peer's `PhaseEnd` and `Result` arrived, checks what arrived and answers `PhaseEndAck`; both then
//! wait for the peer's `PhaseEndAck`. Each side's row is the sum of both directions.
//!
//! Each buffer is two halves: the *inbox* (first half, where the peer's RDMA writes land and
//! where reads land locally) and the *outbox* (second half: the source of writes and sends, and
//! what the peer reads). The outbox holds [`pattern`] bytes, so the receiving side can check
//! what arrived.

/// Octets of a control message.
pub const CTRL_LEN: usize = 64;
const MAGIC: &[u8; 4] = b"NDP1";
/// Version of this protocol, carried in the connect private data.
pub const VERSION: u8 = 1;

/// A control message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client's buffer advertisement.
    Hello = 1,
    /// Server's buffer advertisement.
    HelloAck = 2,
    /// Start of a measurement.
    Phase = 3,
    /// Server ready for it.
    PhaseAck = 4,
    /// End of a measurement.
    PhaseEnd = 5,
    /// Server's data check.
    PhaseEndAck = 6,
    /// End of the test.
    Bye = 7,
    /// Receive credits.
    Credit = 8,
    /// A side's own figures of a bidirectional (`-b`) measurement.
    Result = 9,
}

/// A control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctrl {
    /// Its type.
    pub kind: Kind,
    /// Fields (meaning per type, see the module docs).
    pub a: u64,
    /// Second field.
    pub b: u64,
    /// Third field.
    pub c: u64,
    /// Fourth field.
    pub d: u64,
}

impl Ctrl {
    /// A message with fields a and b, the rest zero.
    pub fn new(kind: Kind, a: u64, b: u64) -> Ctrl {
        Ctrl {
            kind,
            a,
            b,
            c: 0,
            d: 0,
        }
    }

    /// The 64 octets on the wire.
    pub fn encode(&self) -> [u8; CTRL_LEN] {
        let mut m = [0u8; CTRL_LEN];
        m[..4].copy_from_slice(MAGIC);
        m[4] = self.kind as u8;
        for (k, v) in [self.a, self.b, self.c, self.d].into_iter().enumerate() {
            m[8 + 8 * k..16 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        m
    }

    /// Parses a received message; `None` if it is not one.
    pub fn decode(m: &[u8]) -> Option<Ctrl> {
        if m.len() != CTRL_LEN || &m[..4] != MAGIC {
            return None;
        }
        let kind = match m[4] {
            1 => Kind::Hello,
            2 => Kind::HelloAck,
            3 => Kind::Phase,
            4 => Kind::PhaseAck,
            5 => Kind::PhaseEnd,
            6 => Kind::PhaseEndAck,
            7 => Kind::Bye,
            8 => Kind::Credit,
            9 => Kind::Result,
            _ => return None,
        };
        let f =
            |k: usize| u64::from_le_bytes(m[8 + 8 * k..16 + 8 * k].try_into().unwrap_or([0; 8]));
        Some(Ctrl {
            kind,
            a: f(0),
            b: f(1),
            c: f(2),
            d: f(3),
        })
    }
}

/// Connect private data (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Test id ([`crate::perf::Test::id`]).
    pub test: u8,
    /// This QP's index.
    pub qp_index: u8,
    /// QPs the client opens.
    pub qp_count: u8,
    /// Largest message size of the run.
    pub max_size: u64,
}

impl Hello {
    /// The private data.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[self.test, self.qp_index, self.qp_count, VERSION]);
        v.extend_from_slice(&self.max_size.to_le_bytes());
        v
    }

    /// Parses private data; `None` if it is not ours.
    pub fn decode(d: &[u8]) -> Option<Hello> {
        if d.len() < 16 || &d[..4] != MAGIC || d[7] != VERSION {
            return None;
        }
        Some(Hello {
            test: d[4],
            qp_index: d[5],
            qp_count: d[6],
            max_size: u64::from_le_bytes(d[8..16].try_into().ok()?),
        })
    }
}

/// The byte at offset `i` of every outbox: never the start of a control message.
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7).wrapping_add(1) % 251) as u8
}

/// Fills `b` with [`pattern`] from offset 0.
pub fn fill_pattern(b: &mut [u8]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x = pattern(i);
    }
}

/// The pattern's period: `pattern(i + PERIOD) == pattern(i)`.
const PERIOD: usize = 251;

/// [`pattern`] over 256 periods, compared chunk by chunk (memcmp speed).
fn reference() -> &'static [u8] {
    static REF: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let mut v = vec![0u8; PERIOD * 256];
        fill_pattern(&mut v);
        v
    })
}

/// Whether `b` holds [`pattern`] from offset 0.
pub fn check_pattern(b: &[u8]) -> bool {
    let r = reference();
    b.chunks(r.len()).all(|c| c == &r[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = Ctrl {
            kind: Kind::PhaseEndAck,
            a: 1,
            b: u64::MAX,
            c: 3,
            d: 4,
        };
        assert_eq!(Ctrl::decode(&c.encode()), Some(c));
        let h = Hello {
            test: 3,
            qp_index: 1,
            qp_count: 2,
            max_size: 1 << 23,
        };
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let mut data = [0u8; CTRL_LEN];
        fill_pattern(&mut data);
        assert_eq!(Ctrl::decode(&data), None);
        assert!(check_pattern(&data));
        let mut big = vec![0u8; 3 * PERIOD * 256 + 17];
        fill_pattern(&mut big);
        assert!(check_pattern(&big));
        assert!(big.iter().enumerate().all(|(i, x)| *x == pattern(i)));
        big[PERIOD * 256 + 5] ^= 1;
        assert!(!check_pattern(&big));
    }
}
