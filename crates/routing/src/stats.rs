//! Throughput and latency per message name: how many commands (or queries) of each name ended
//! how, and the time they took in all, for `/actuator/prometheus`.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

/// One (context, name, outcome) line: how many, and their seconds summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stat {
    pub count: u64,
    pub seconds: f64,
}

/// `outcome` is `ok`, or the Axon error code the sender got (the server's or the handler's).
#[derive(Debug, Default)]
pub struct MessageStats {
    lines: Mutex<BTreeMap<(String, String, String), Stat>>,
}

impl MessageStats {
    /// Counts one message of `name` in `context` that ended with `error_code` (empty: success)
    /// after `took`.
    pub fn record(&self, context: &str, name: &str, error_code: &str, took: Duration) {
        let outcome = if error_code.is_empty() { "ok" } else { error_code };
        let mut lines = self.lines.lock();
        let stat = lines
            .entry((context.to_string(), name.to_string(), outcome.to_string()))
            .or_default();
        stat.count += 1;
        stat.seconds += took.as_secs_f64();
    }

    /// Every line, sorted by context, name and outcome.
    pub fn snapshot(&self) -> Vec<(String, String, String, Stat)> {
        self.lines
            .lock()
            .iter()
            .map(|((context, name, outcome), stat)| (context.clone(), name.clone(), outcome.clone(), *stat))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_add_up_per_context_name_and_outcome() {
        let stats = MessageStats::default();
        stats.record("default", "DoIt", "", Duration::from_millis(10));
        stats.record("default", "DoIt", "", Duration::from_millis(30));
        stats.record("default", "DoIt", "AXONIQ-4000", Duration::from_millis(1));
        let lines = stats.snapshot();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].2.as_str(), lines[0].3.count), ("AXONIQ-4000", 1));
        assert_eq!((lines[1].2.as_str(), lines[1].3.count), ("ok", 2));
        assert!((lines[1].3.seconds - 0.04).abs() < 1e-9);
    }
}
