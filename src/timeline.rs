//! Where a long command spends its time: each phase with its start (from
//! the command's start) and its duration. Phases may overlap (a restore
//! writes volumes while Postgres loads), which the start offsets show.
//! Each phase is logged when it ends (`-v`), and the whole timeline goes
//! into the command's report, so an administrator sees which stage to
//! look at without a profiler.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Phase {
    pub name: String,
    /// Seconds from the command's start to the phase's start.
    pub started_at: f64,
    pub secs: f64,
}

/// Phases of one command, shareable between the threads that run them.
#[derive(Debug)]
pub struct Timeline {
    command: String,
    start: Instant,
    phases: Mutex<Vec<Phase>>,
}

impl Timeline {
    pub fn new(command: &str) -> Timeline {
        Timeline {
            command: command.to_string(),
            start: Instant::now(),
            phases: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` as phase `name`; a phase that fails is recorded too.
    pub fn phase<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let began = Instant::now();
        let out = f();
        let phase = Phase {
            name: name.to_string(),
            started_at: began.duration_since(self.start).as_secs_f64(),
            secs: began.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "{} timeline: +{:.1}s {} took {:.1}s",
            self.command,
            phase.started_at,
            phase.name,
            phase.secs
        );
        self.phases.lock().expect("no phase panics").push(phase);
        out
    }

    /// The phases in the order they started.
    pub fn phases(&self) -> Vec<Phase> {
        let mut all = self.phases.lock().expect("no phase panics").clone();
        all.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
        all
    }

    /// Seconds since the command started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// The timeline as text lines, for a report: `+0.3s  2.1s  name`.
pub fn describe(phases: &[Phase]) -> Vec<String> {
    phases
        .iter()
        .map(|p| format!("+{:>6.1}s {:>7.1}s  {}", p.started_at, p.secs, p.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overlapping_phases_are_listed_by_start_with_their_durations() {
        let t = Timeline::new("restore");
        std::thread::scope(|s| {
            s.spawn(|| t.phase("slow", || std::thread::sleep(Duration::from_millis(120))));
            std::thread::sleep(Duration::from_millis(30));
            t.phase("fast", || std::thread::sleep(Duration::from_millis(10)));
        });
        let phases = t.phases();
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["slow", "fast"]);
        assert!(phases[0].secs >= 0.12, "{phases:?}");
        assert!(phases[1].started_at >= 0.03 && phases[1].secs < phases[0].secs);
        let result: Result<(), &str> = t.phase("failing", || Err("no"));
        assert!(result.is_err());
        assert_eq!(t.phases().len(), 3, "a failed phase is recorded too");
        assert!(describe(&t.phases())[0].ends_with("  slow"));
    }
}
