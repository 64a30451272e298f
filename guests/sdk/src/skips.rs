//! Counting rows left out, by reason.

/// Counts skipped rows per reason, remembering the first row of each. The
/// reasons become strings of the output's table when the output is
/// finished ([`crate::OutputBuilder::finish`]).
#[derive(Default)]
pub struct SkipCounter {
    counts: Vec<(&'static str, u64, u32)>,
}

impl SkipCounter {
    /// Counts row `row` (0-based) as skipped for `reason`, a short stable
    /// kebab-case word such as `null-value`: the host counts rows by it, so
    /// it names a kind of problem, never a value.
    #[inline]
    pub fn skip(&mut self, reason: &'static str, row: usize) {
        if let Some(c) = self.counts.iter_mut().find(|c| c.0 == reason) {
            c.1 += 1;
        } else {
            self.counts
                .push((reason, 1, u32::try_from(row).unwrap_or(u32::MAX)));
        }
    }

    /// Rows skipped so far, over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.1).sum()
    }

    /// (reason, rows, first row) in the order the reasons first occurred.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64, u32)> + '_ {
        self.counts.iter().copied()
    }
}
