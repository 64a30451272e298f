//! Counting rows left out, by reason.

use crate::SkipCount;

/// Counts skipped rows per reason, remembering the first row of each.
#[derive(Default)]
pub struct SkipCounter {
    counts: Vec<SkipCount>,
}

impl SkipCounter {
    #[inline]
    pub fn skip(&mut self, reason: &'static str, row: usize) {
        if let Some(c) = self.counts.iter_mut().find(|c| c.reason == reason) {
            c.count += 1;
        } else {
            self.counts.push(SkipCount {
                reason: reason.to_string(),
                count: 1,
                first_row: row as u32,
            });
        }
    }

    pub fn finish(self) -> Vec<SkipCount> {
        self.counts
    }
}
