//! Data streams: their ids and the rules every frame of one must follow.
//!
//! The task-agent allocates every stream id: from 1 up, each id used once and opened in the
//! order allocated, so an id says unambiguously which log, upload or download a frame belongs to
//! for the whole connection. Id 0 is reserved and refused by the frame codec, so a zeroed frame cannot pass
//! for a stream. A stream is opened by the message that names it (`StepStarted`'s `log`,
//! `Upload`, `Download`) and closed by its last one (`StepFinished`, `End`, `NotFound`,
//! `Uploaded`). Each side keeps a [`StreamTable`] of what is open and refuses, as a protocol
//! error naming the stream, a frame for a stream that is not open, an id used twice or out of
//! order, and more open streams than its bound.

use std::collections::HashMap;

use crate::ProtocolError;

/// How many streams one side keeps open at once by default (logs of background steps,
/// uploads and downloads together); past it the peer is broken or hostile.
pub const DEFAULT_MAX_OPEN_STREAMS: usize = 1024;

/// One side's open streams, each with what it is for (`P`).
#[derive(Debug)]
pub struct StreamTable<P> {
    open: HashMap<u32, P>,
    highest: u32,
    max_open: usize,
}

impl<P> StreamTable<P> {
    pub fn new(max_open: usize) -> StreamTable<P> {
        StreamTable {
            open: HashMap::new(),
            highest: 0,
            max_open,
        }
    }

    /// Opens `stream` for `purpose`: it must be above every id seen so far.
    pub fn open(&mut self, stream: u32, purpose: P) -> Result<(), ProtocolError> {
        if stream == 0 {
            return Err(ProtocolError::StreamZero);
        }
        if stream <= self.highest {
            return Err(ProtocolError::StreamOutOfOrder {
                stream,
                highest: self.highest,
            });
        }
        if self.open.len() >= self.max_open {
            return Err(ProtocolError::TooManyStreams { max: self.max_open });
        }
        self.highest = stream;
        self.open.insert(stream, purpose);
        Ok(())
    }

    /// The open stream `stream`, or an error saying that `what` arrived for a stream that is
    /// not open.
    pub fn expect(&mut self, stream: u32, what: &'static str) -> Result<&mut P, ProtocolError> {
        self.open
            .get_mut(&stream)
            .ok_or(ProtocolError::UnknownStream { stream, what })
    }

    /// Closes `stream`, returning its purpose; `what` names the closing frame for the error.
    pub fn close(&mut self, stream: u32, what: &'static str) -> Result<P, ProtocolError> {
        self.open
            .remove(&stream)
            .ok_or(ProtocolError::UnknownStream { stream, what })
    }

    /// Whether `stream` was opened at some point (it may be closed by now): a late frame for it
    /// can be a race, a frame for an id never opened cannot.
    pub fn was_opened(&self, stream: u32) -> bool {
        stream != 0 && stream <= self.highest
    }

    pub fn is_open(&self, stream: u32) -> bool {
        self.open.contains_key(&stream)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_refuses_zero_reuse_unknown_and_too_many() {
        let mut table = StreamTable::new(2);
        assert!(matches!(table.open(0, ()), Err(ProtocolError::StreamZero)));
        table.open(5, ()).unwrap();
        let err = table.open(5, ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream 5 opened after stream 5: stream ids increase and are never reused"
        );
        assert!(matches!(
            table.open(3, ()),
            Err(ProtocolError::StreamOutOfOrder {
                stream: 3,
                highest: 5
            })
        ));
        table.open(6, ()).unwrap();
        assert_eq!(
            table.open(7, ()).unwrap_err().to_string(),
            "more than 2 data streams open at once"
        );
        table.close(5, "end").unwrap();
        let err = table.expect(5, "a data frame").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a data frame for stream 5, which is not open"
        );
        assert!(table.was_opened(5));
        assert!(!table.was_opened(9));
        assert!(table.is_open(6));
        assert_eq!(table.len(), 1);
    }
}
