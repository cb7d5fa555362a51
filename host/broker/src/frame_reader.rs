//! Reading one connection's frames: newline-delimited, each under a size
//! cap and a deadline from its first byte, with an idle deadline between
//! them. Generic over the source so that the framing is tested without
//! sockets.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::nonblocking::recv_now;

/// The limits a connection's frames are read under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    pub max_frame_bytes: usize,
    pub max_unanswered: usize,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
}

/// Where frames come from: a blocking reader that takes a deadline, and
/// may say what it holds already without blocking.
pub(crate) trait FrameSource: Read {
    /// What can be read without waiting: `None` if nothing is there yet.
    fn read_now(&mut self, _buf: &mut [u8]) -> Option<std::io::Result<usize>> {
        None
    }

    /// Bounds the next blocking `read` to `left`; a read that runs out
    /// fails with `WouldBlock` or `TimedOut`.
    fn set_deadline(&mut self, _left: Duration) -> std::io::Result<()> {
        Ok(())
    }
}

impl FrameSource for UnixStream {
    fn read_now(&mut self, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
        recv_now(self, buf)
    }

    fn set_deadline(&mut self, left: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(left))
    }
}

/// Why a connection's reading ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadEnded {
    #[error("closed by the agent")]
    Closed,
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("frame not completed within {0:?} of its first byte")]
    FrameTimeout(Duration),
    #[error("cannot set a read deadline: {0}")]
    Deadline(std::io::Error),
    #[error("read error: {0}")]
    Io(std::io::Error),
}

/// One frame read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole line is in [`FrameReader::line`], with its newline.
    Line,
    /// A frame over the size limit, skipped to its end.
    Oversized,
}

/// The frames of one connection, read with deadlines and a size cap.
pub(crate) struct FrameReader<S> {
    source: S,
    buf: Box<[u8]>,
    /// `buf[start..end]` is read and not yet consumed.
    start: usize,
    end: usize,
    pub limits: FrameLimits,
    /// The frame just read; the caller clears it once handled.
    pub line: Vec<u8>,
    /// Discarding the rest of an oversized frame.
    discarding: bool,
    /// When the frame being read must be complete.
    frame_deadline: Option<Instant>,
}

/// How long the reader keeps looking for the agent's next frame before it
/// sleeps in `read`. An agent in a loop of calls sends its next request
/// a few tens of microseconds after its answer; a thread that slept in
/// between pays a wake-up that costs more than the call itself, and runs
/// that call on cold caches. The look yields the core to any other thread
/// that wants it, so it costs a busy machine little.
const LOOK_AHEAD: Duration = Duration::from_micros(100);

/// Readers looking ahead at once, across all connections. With more
/// connections busy than cores, a reader that looks takes a core from
/// one that has work, and each look is a system call and a yield: so at
/// most one reader fewer than there are cores looks, and the rest sleep
/// in `read` at once. A single busy agent (the case the look is for) is
/// always the one that looks.
static LOOKING: AtomicUsize = AtomicUsize::new(0);

fn may_look_ahead() -> Option<Looking> {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let max = *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1)
    });
    LOOKING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Looking)
}

/// A reader's place among [`LOOKING`], given back when its look ends.
struct Looking;

impl Drop for Looking {
    fn drop(&mut self) {
        LOOKING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes read from the source at a time.
const READ_CHUNK: usize = 16 * 1024;

impl<S: FrameSource> FrameReader<S> {
    pub(crate) fn new(source: S, limits: FrameLimits) -> FrameReader<S> {
        FrameReader {
            source,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            limits,
            line: Vec::new(),
            discarding: false,
            frame_deadline: None,
        }
    }

    /// Reads more into the empty buffer: first a short look without
    /// sleeping, then a blocking read under the frame's or the idle
    /// deadline. `Ok(0)` is the end of the stream.
    fn fill(&mut self) -> Result<usize, ReadEnded> {
        self.start = 0;
        self.end = 0;
        if let Some(_looking) = may_look_ahead() {
            let looking = Instant::now();
            loop {
                match self.source.read_now(&mut self.buf) {
                    Some(Ok(n)) => {
                        self.end = n;
                        return Ok(n);
                    }
                    Some(Err(e)) => return Err(ReadEnded::Io(e)),
                    None if looking.elapsed() < LOOK_AHEAD => std::thread::yield_now(),
                    None => break,
                }
            }
        }
        let deadline = self
            .frame_deadline
            .unwrap_or_else(|| Instant::now() + self.limits.idle_timeout);
        let expired = |reader: &Self| match reader.frame_deadline {
            Some(_) => ReadEnded::FrameTimeout(reader.limits.frame_timeout),
            None => ReadEnded::Idle(reader.limits.idle_timeout),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(expired(self));
            }
            self.source
                .set_deadline(left)
                .map_err(ReadEnded::Deadline)?;
            match self.source.read(&mut self.buf) {
                Ok(n) => {
                    self.end = n;
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(expired(self));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadEnded::Io(e)),
            }
        }
    }

    /// Reads one frame: a line into `self.line`, or an oversized frame
    /// skipped. `Err` ends the connection, with the reason for the log.
    pub(crate) fn read_frame(&mut self) -> Result<Frame, ReadEnded> {
        enum Step {
            Line,
            More,
            Oversized,
        }
        loop {
            if self.start == self.end && self.fill()? == 0 {
                return Err(ReadEnded::Closed);
            }
            let available = &self.buf[self.start..self.end];
            if self.frame_deadline.is_none() {
                self.frame_deadline = Some(Instant::now() + self.limits.frame_timeout);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let step = if self.discarding {
                if newline.is_some() {
                    self.discarding = false;
                    self.frame_deadline = None;
                }
                Step::More
            } else if self.line.len() + take > self.limits.max_frame_bytes + 1 {
                self.line.clear();
                if newline.is_some() {
                    self.frame_deadline = None;
                } else {
                    self.discarding = true;
                }
                Step::Oversized
            } else {
                self.line.extend_from_slice(&available[..take]);
                if newline.is_some() {
                    self.frame_deadline = None;
                    Step::Line
                } else {
                    Step::More
                }
            };
            self.start += take;
            match step {
                Step::Line => return Ok(Frame::Line),
                Step::Oversized => return Ok(Frame::Oversized),
                Step::More => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A source that hands out its chunks one read at a time, then times
    /// out (`Err(TimedOut)`) or ends (`Ok(0)`).
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        then_time_out: bool,
    }

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.chunks.pop_front() {
                Some(c) => {
                    buf[..c.len()].copy_from_slice(&c);
                    Ok(c.len())
                }
                None if self.then_time_out => Err(std::io::ErrorKind::TimedOut.into()),
                None => Ok(0),
            }
        }
    }

    impl FrameSource for Chunks {}

    fn limits(max: usize) -> FrameLimits {
        FrameLimits {
            max_frame_bytes: max,
            max_unanswered: 4,
            idle_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(1),
        }
    }

    fn reader(chunks: &[&str], max: usize, then_time_out: bool) -> FrameReader<Chunks> {
        let chunks = chunks.iter().map(|c| c.as_bytes().to_vec()).collect();
        FrameReader::new(
            Chunks {
                chunks,
                then_time_out,
            },
            limits(max),
        )
    }

    fn next_line(r: &mut FrameReader<Chunks>) -> Result<String, ReadEnded> {
        let frame = r.read_frame()?;
        assert_eq!(frame, Frame::Line);
        let line = String::from_utf8(r.line.clone()).unwrap();
        r.line.clear();
        Ok(line)
    }

    #[test]
    fn lines_are_split_and_joined_across_reads() {
        let mut r = reader(&["{\"a\":1}\n{\"b\"", ":2}\n\n"], 64, false);
        assert_eq!(next_line(&mut r).unwrap(), "{\"a\":1}\n");
        assert_eq!(next_line(&mut r).unwrap(), "{\"b\":2}\n");
        assert_eq!(next_line(&mut r).unwrap(), "\n");
        assert!(matches!(r.read_frame(), Err(ReadEnded::Closed)));
    }

    #[test]
    fn a_frame_at_the_limit_passes_and_one_over_is_skipped_to_its_end() {
        let at = format!("{}\n", "x".repeat(8));
        let over = format!("{}\n", "y".repeat(9));
        let mut r = reader(&[&at, &over[..4], &over[4..], "ok\n"], 8, false);
        assert_eq!(next_line(&mut r).unwrap(), at);
        assert_eq!(r.read_frame().unwrap(), Frame::Oversized);
        // The oversized frame's tail, read later, is discarded too.
        assert_eq!(next_line(&mut r).unwrap(), "ok\n");
    }

    #[test]
    fn a_deadline_names_whether_a_frame_was_under_way() {
        let mut idle = reader(&[], 64, true);
        assert!(matches!(idle.read_frame(), Err(ReadEnded::Idle(_))));
        let mut partial = reader(&["{\"half\":"], 64, true);
        let err = partial.read_frame().unwrap_err();
        assert!(matches!(err, ReadEnded::FrameTimeout(_)));
        assert_eq!(
            err.to_string(),
            "frame not completed within 1s of its first byte"
        );
    }

    #[test]
    fn a_closed_stream_mid_frame_ends_the_connection() {
        let mut r = reader(&["{\"cut\":"], 64, false);
        assert!(matches!(r.read_frame(), Err(ReadEnded::Closed)));
    }
}
