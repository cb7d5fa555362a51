//! The two system calls the standard library does not offer: a send and a
//! receive on a Unix stream that never block (and never raise SIGPIPE),
//! whatever the descriptor's own mode.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// Without blocking: `Some(n)` bytes sent, `None` if the peer's buffer
/// has no room. Never raises SIGPIPE.
pub(crate) fn send_now(stream: &UnixStream, buf: &[u8]) -> std::io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
        // whole call, and the descriptor stays open: `stream` is borrowed.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(None),
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Without blocking: `Some(Ok(n))` read, `Some(Ok(0))` the end of the
/// stream, `None` nothing there yet.
pub(crate) fn recv_now(stream: &UnixStream, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call, and the descriptor stays open: `stream` is borrowed.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Some(Ok(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => None,
        _ => Some(Err(e)),
    }
}
