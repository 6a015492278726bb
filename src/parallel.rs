//! A few threads for work that is mostly waiting for a cold disk: opening several images, reading
//! the root's systemd-sysext binary while the images are looked at.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Run `job(0..n)` on a few threads, results in order. One job runs on the caller's thread: no
/// thread, nor the cgroup files that tell how many CPUs there are.
pub fn map<T: Send>(n: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if n <= 1 {
        return (0..n).map(job).collect();
    }
    let workers = std::thread::available_parallelism().map_or(2, |p| p.get() * 2).min(8).min(n);
    let next = AtomicUsize::new(0);
    let results = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<T>>>());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = job(i);
                results.lock().expect("no worker panics while holding the lock")[i] = Some(r);
            });
        }
    });
    results.into_inner().expect("workers finished").into_iter().map(|r| r.expect("every job ran")).collect()
}

/// A value computed on a thread of its own from the start, and waited for only where it is
/// needed.
pub struct Later<T> {
    job: Mutex<Option<std::thread::JoinHandle<T>>>,
    value: std::sync::OnceLock<T>,
}

impl<T: Send + 'static> Later<T> {
    pub fn spawn(f: impl FnOnce() -> T + Send + 'static) -> Later<T> {
        Later { job: Mutex::new(Some(std::thread::spawn(f))), value: std::sync::OnceLock::new() }
    }

    pub fn ready(value: T) -> Later<T> {
        Later { job: Mutex::new(None), value: value.into() }
    }

    pub fn get(&self) -> &T {
        self.value.get_or_init(|| {
            let job = self.job.lock().expect("nobody panics holding it").take().expect("not yet joined");
            job.join().expect("the job does not panic")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order_of_the_jobs() {
        let out = map(20, |i| {
            std::thread::sleep(std::time::Duration::from_millis((20 - i) as u64));
            i * 2
        });
        assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn later_gives_the_value_of_its_thread_every_time() {
        let later = Later::spawn(|| std::thread::current().id());
        assert_ne!(*later.get(), std::thread::current().id());
        assert_eq!(later.get(), later.get());
        assert_eq!(*Later::ready(7).get(), 7);
    }
}
