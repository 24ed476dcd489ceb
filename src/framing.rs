//! gRPC's length-prefixed message framing, written once: every message on a gRPC stream is a
//! compression flag (one byte), its length (four bytes, big-endian) and its bytes.
//!
//! The hand-wired SpecProvider frames its answers with [`frame`] and reads requests with
//! [`split_message`]; the gRPC metrics count messages with [`FrameCounter`]; the benchmark and
//! the wire tests build raw requests with [`frame`].

use bytes::{BufMut, Bytes};
use prost::Message;

/// Length of the prefix of every gRPC message: a compression flag and a 4-byte big-endian length.
pub const PREFIX_BYTES: usize = 5;

/// The prefix of an uncompressed message of `len` bytes; `None` if it is longer than a gRPC
/// message can be (4 GiB).
pub fn prefix(len: usize) -> Option<[u8; PREFIX_BYTES]> {
    let len = u32::try_from(len).ok()?.to_be_bytes();
    Some([0, len[0], len[1], len[2], len[3]])
}

/// `message` as it goes on the wire: uncompressed, after its length; `None` if it is longer
/// than a gRPC message can be (4 GiB).
pub fn frame(message: &impl Message) -> Option<Bytes> {
    let len = message.encoded_len();
    let prefix = prefix(len)?;
    let mut framed = Vec::with_capacity(PREFIX_BYTES + len);
    framed.put_slice(&prefix);
    message.encode_raw(&mut framed);
    Some(framed.into())
}

/// What [`split_message`] found wrong with a body that should hold exactly one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The body is empty.
    #[error("missing request message")]
    Empty,
    /// The body ends before the prefix does.
    #[error("the request ends inside a message's length prefix")]
    ShortPrefix,
    /// The message is compressed (flag `0`), which this server does not accept.
    #[error(
        "the request's message has compressed-flag {0}; this server accepts uncompressed \
         messages only"
    )]
    Compressed(u8),
    /// The prefix's length differs from the bytes that follow it.
    #[error(
        "the request's message should be {declared} bytes long and one message is expected; \
         {actual} bytes follow its prefix"
    )]
    Length {
        /// The length the prefix declares.
        declared: u32,
        /// The bytes after the prefix.
        actual: usize,
    },
}

/// The one uncompressed message a unary call's `body` holds, without its prefix.
pub fn split_message(body: &[u8]) -> Result<&[u8], FramingError> {
    let Some(([flag, len @ ..], message)) = body.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(if body.is_empty() {
            FramingError::Empty
        } else {
            FramingError::ShortPrefix
        });
    };
    if *flag != 0 {
        return Err(FramingError::Compressed(*flag));
    }
    let declared = u32::from_be_bytes(*len);
    if usize::try_from(declared).ok() != Some(message.len()) {
        return Err(FramingError::Length {
            declared,
            actual: message.len(),
        });
    }
    Ok(message)
}

/// Follows gRPC's length-prefixed framing across data chunks of any size, to count messages
/// without buffering them.
#[derive(Debug, Default)]
pub struct FrameCounter {
    /// How many bytes of the current prefix were read (0 to 5).
    prefix_read: usize,
    /// The message length being read from the prefix.
    length: [u8; 4],
    /// Bytes of the current message still to come, once its prefix was read.
    remaining: u32,
}

impl FrameCounter {
    /// Consumes `data`; returns how many messages it completed.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut completed = 0;
        while !data.is_empty() {
            if self.prefix_read < PREFIX_BYTES {
                if self.prefix_read > 0 {
                    self.length[self.prefix_read - 1] = data[0];
                }
                data = &data[1..];
                self.prefix_read += 1;
                if self.prefix_read == PREFIX_BYTES {
                    self.remaining = u32::from_be_bytes(self.length);
                }
            } else {
                let take = data.len().min(self.remaining as usize);
                data = &data[take..];
                // `take` is at most `remaining`, a u32.
                self.remaining -= take as u32;
            }
            if self.prefix_read == PREFIX_BYTES && self.remaining == 0 {
                completed += 1;
                self.prefix_read = 0;
            }
        }
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(payload: &[u8]) -> Vec<u8> {
        let mut bytes = prefix(payload.len()).unwrap().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_frame_is_flag_zero_then_the_big_endian_length_then_the_message() {
        let message = prost_types::Duration {
            seconds: 300,
            nanos: 0,
        };
        let framed = frame(&message).unwrap();
        let encoded = message.encode_to_vec();
        assert_eq!(framed[0], 0);
        assert_eq!(
            framed[1..5],
            u32::try_from(encoded.len()).unwrap().to_be_bytes()
        );
        assert_eq!(&framed[5..], encoded.as_slice());
        assert_eq!(split_message(&framed).unwrap(), encoded.as_slice());
    }

    #[test]
    fn split_message_names_what_is_wrong() {
        assert_eq!(split_message(&[]), Err(FramingError::Empty));
        assert_eq!(split_message(&[0, 0]), Err(FramingError::ShortPrefix));
        assert_eq!(
            split_message(&[1, 0, 0, 0, 0]),
            Err(FramingError::Compressed(1))
        );
        assert_eq!(
            split_message(&[0, 0, 0, 0, 2, 7]),
            Err(FramingError::Length {
                declared: 2,
                actual: 1
            })
        );
        assert_eq!(split_message(&[0, 0, 0, 0, 0]), Ok(&[][..]));
    }

    #[test]
    fn frames_are_counted_whole_or_split_at_any_byte() {
        let mut stream = raw(b"hello");
        stream.extend(raw(b""));
        stream.extend(raw(&[7; 300]));
        for split in 0..=stream.len() {
            let mut counter = FrameCounter::default();
            let (a, b) = stream.split_at(split);
            let counted = counter.feed(a) + counter.feed(b);
            assert_eq!(counted, 3, "split at {split}");
        }
        let mut counter = FrameCounter::default();
        let one_by_one: u64 = stream.iter().map(|b| counter.feed(&[*b])).sum();
        assert_eq!(one_by_one, 3);
    }

    #[test]
    fn an_unfinished_message_is_not_counted() {
        let stream = raw(b"hello");
        let mut counter = FrameCounter::default();
        assert_eq!(counter.feed(&stream[..stream.len() - 1]), 0);
        assert_eq!(counter.feed(&stream[stream.len() - 1..]), 1);
    }
}
