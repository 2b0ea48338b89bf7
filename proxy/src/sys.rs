//! The one place with `unsafe`: a non-blocking peek on a socket, to tell whether an
//! idle pooled upstream connection was closed (or sent stray bytes) before reusing it;
//! non-blocking `recv`s for a PROXY protocol header; and raising the open-file limit at
//! start.
//!
//! Runs on: workers (the peek: one `recv(MSG_PEEK | MSG_DONTWAIT)` syscall; it never
//! blocks and never consumes data), and the main thread at start (the limit). Tested
//! below with real sockets.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

use crate::transport::Idle;

/// Raises the soft open-file limit to the hard one (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do): each client connection needs a descriptor, two while it
/// is forwarded, and container runtimes often start processes with a soft limit of 1024.
/// Returns the (soft, hard) limits now in force.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the call; lowering nothing, raising
        // the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Peeks at an idle socket without blocking.
pub(crate) fn peek_idle(fd: RawFd) -> Idle {
    let mut byte = 0u8;
    // SAFETY: `fd` is a socket owned by the caller for the duration of the call; the
    // buffer is a valid, writable one-byte local. MSG_PEEK leaves the data in place and
    // MSG_DONTWAIT makes the call non-blocking whatever the socket's mode.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Idle::Open;
        }
    }
    Idle::Unusable
}

/// One non-blocking `recv(2)` on socket `fd` into `buf`, with `MSG_PEEK` when `peek`.
pub(crate) fn recv_now(fd: RawFd, buf: &mut [u8], peek: bool) -> std::io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: `fd` is a socket owned by the caller for the duration of the call; `buf` is
    // valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn peek_tells_open_closed_and_dirty_connections_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(peek_idle(client.as_raw_fd()), Idle::Open);
        server.write_all(b"x").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while peek_idle(client.as_raw_fd()) == Idle::Open {
            assert!(
                std::time::Instant::now() < deadline,
                "stray byte never seen"
            );
            std::thread::yield_now();
        }
        let client2 = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server2, _) = listener.accept().unwrap();
        drop(server2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while peek_idle(client2.as_raw_fd()) == Idle::Open {
            assert!(std::time::Instant::now() < deadline, "close never seen");
            std::thread::yield_now();
        }
    }
}
