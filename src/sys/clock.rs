//! The CPU time of the calling thread.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// CPU time the calling thread has used, the kernel's own count. It goes on across `execve`, so
/// at the start of `main` it is what starting the process cost.
pub fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.unsigned_abs() as u32)
}
