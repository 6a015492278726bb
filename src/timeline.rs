//! When each step of a merge ended, for report.json: the time since `main` began, and the CPU
//! time the main thread had used by then. Telling CPU from waiting says where a slow boot goes:
//! a cold disk, another thread, or code run for the first time (under emulation such as QEMU's
//! TCG, that costs far more than the work itself). The CPU time already used when `main` began
//! is the cost of starting the process (the service manager's fork and exec helpers), which no
//! step of ours can change. One clock read per step: a few microseconds.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::class::Class;
use crate::json::Json;
use crate::sys::clock::thread_cpu;

/// One step's end.
struct Step {
    /// The pass it belongs to; `None` for what both share.
    class: Option<Class>,
    name: &'static str,
    since_main: Duration,
    cpu: Duration,
}

struct Timeline {
    start: Instant,
    cpu_before_main: Duration,
    steps: Mutex<Vec<Step>>,
}

static TIMELINE: OnceLock<Timeline> = OnceLock::new();

/// Start the clock; `main` calls this first. Later calls change nothing.
pub fn start() {
    // The wall clock is read first here and last in `mark`, so no step shows more CPU time than
    // time passed.
    TIMELINE.get_or_init(|| Timeline {
        start: Instant::now(),
        cpu_before_main: thread_cpu(),
        steps: Mutex::new(Vec::with_capacity(24)),
    });
}

/// `name` (of `class`'s pass) ended now. Call it from the main thread: the CPU time is the
/// calling thread's.
pub fn mark(class: Option<Class>, name: &'static str) {
    if let Some(t) = TIMELINE.get() {
        let cpu = thread_cpu().saturating_sub(t.cpu_before_main);
        let step = Step { class, name, since_main: t.start.elapsed(), cpu };
        t.steps.lock().unwrap_or_else(|e| e.into_inner()).push(step);
    }
}

/// The report's `timeline`, in microseconds; null if the clock was never started.
pub fn to_json() -> Json {
    let Some(t) = TIMELINE.get() else { return Json::Null };
    let us = |d: Duration| Json::Num(d.as_micros() as u64);
    let steps = t.steps.lock().unwrap_or_else(|e| e.into_inner());
    let step = |s: &Step| {
        Json::Obj(vec![
            ("class", s.class.map(Class::name).into()),
            ("step", s.name.into()),
            ("us", us(s.since_main)),
            ("cpu_us", us(s.cpu)),
        ])
    };
    Json::Obj(vec![
        ("cpu_before_main_us", us(t.cpu_before_main)),
        ("steps", Json::Arr(steps.iter().map(step).collect())),
    ])
}
