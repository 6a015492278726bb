//! A few threads, so that the slow reads of a cold disk overlap other work: opening several
//! images, finding the sysexts, reading the root's systemd-sysext binary, the clash checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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

    pub fn into_inner(self) -> T {
        self.get();
        self.value.into_inner().expect("got above")
    }
}

/// Jobs not yet taken, and whether more may come; woken when either changes.
type Queue<J> = (Mutex<(Vec<J>, bool)>, Condvar);

/// Jobs run one after another on a thread of its own as they are handed over (`send`, from any
/// thread), until `close`; `finish` gives what each came to, in the order they ran. A mutex and
/// a condition variable: std's channels would add ~16 KB to the binary.
pub struct Feed<J, T> {
    queue: Arc<Queue<J>>,
    results: Later<Vec<T>>,
}

impl<J: Send + 'static, T: Send + 'static> Feed<J, T> {
    pub fn spawn(job: impl Fn(J) -> T + Send + 'static) -> Feed<J, T> {
        let queue = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let theirs = Arc::clone(&queue);
        let results = Later::spawn(move || {
            let (lock, ready) = &*theirs;
            let mut out = Vec::new();
            let mut state = lock.lock().expect("nobody panics holding it");
            loop {
                if !state.0.is_empty() {
                    let jobs = std::mem::take(&mut state.0);
                    drop(state);
                    out.extend(jobs.into_iter().map(&job));
                    state = lock.lock().expect("nobody panics holding it");
                } else if state.1 {
                    return out;
                } else {
                    state = ready.wait(state).expect("nobody panics holding it");
                }
            }
        });
        Feed { queue, results }
    }

    pub fn send(&self, job: J) {
        self.queue.0.lock().expect("nobody panics holding it").0.push(job);
        self.queue.1.notify_one();
    }

    /// No more jobs: the thread ends once it has run those it has.
    pub fn close(&self) {
        self.queue.0.lock().expect("nobody panics holding it").1 = true;
        self.queue.1.notify_one();
    }

    pub fn finish(self) -> Vec<T> {
        self.close();
        self.results.into_inner()
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
        assert_eq!(Later::spawn(|| 8).into_inner(), 8);
    }

    #[test]
    fn feed_runs_every_job_sent_from_any_thread_before_it_finishes() {
        let feed = Feed::spawn(|i: usize| i * 2);
        map(8, |i| feed.send(i));
        std::thread::sleep(std::time::Duration::from_millis(10));
        feed.send(100);
        let mut out = feed.finish();
        out.sort();
        assert_eq!(out, [0, 2, 4, 6, 8, 10, 12, 14, 200]);
    }
}
