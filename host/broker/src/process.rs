//! A process-wide setting for a process that serves many agents.

/// Turns transparent huge pages off for this process, for memory mapped
/// or first touched from now on. The broker keeps two threads per agent
/// connection, and mimalloc asks for huge pages for each thread's pages
/// of small objects: an idle connection then holds most of a huge page
/// rather than the few small pages it uses (measured in `ARCHITECTURE.md`,
/// "Memory per idle agent"). Call first thing in `main`.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and no pointers; it
    // only sets a flag on this process's memory map.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flag_is_set_for_the_process() {
        super::disable_transparent_huge_pages().unwrap();
        // SAFETY: as above; PR_GET_THP_DISABLE reads the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
