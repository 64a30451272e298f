//! One rule read once for all the exporters of a MetricsExporter.
//!
//! Each exporter keeps its own progress, so after one of them failed they
//! stand at different places. Jobs that stand at the same place share one
//! read ([`run_group`]); the others first catch up on their own, stopping
//! exactly where the ones ahead stand ([`MAX_CATCH_UP_ROUNDS`] rounds at
//! most), and then join them. For ADX the catch-up is cut at the window end
//! the jobs ahead reached; local tables are read to their end either way,
//! so jobs meet there unless the table grows in between. Jobs that still
//! stand apart after the rounds run side by side, each reading for itself,
//! as they would alone.

use super::job::{Job, JobError, JobReport, run_group, start_progress};
use super::stop::Stop;
use crate::state::{Cursor, Progress};

/// Catch-up rounds before jobs that still stand apart read separately.
pub const MAX_CATCH_UP_ROUNDS: usize = 3;

/// Runs the jobs of one rule (one per exporter); each job's report and
/// result are at its index.
pub async fn run_rule(jobs: &[Job<'_>], stop: &Stop) -> Vec<(JobReport, Result<(), JobError>)> {
    let mut reports: Vec<JobReport> = jobs.iter().map(|_| JobReport::default()).collect();
    let mut results: Vec<Option<Result<(), JobError>>> = jobs.iter().map(|_| None).collect();
    for round in 0..=MAX_CATCH_UP_ROUNDS {
        let mut standing = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match start_progress(job, stop).await {
                Ok(p) => standing.push((i, p)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let groups = groups(standing);
        if groups.is_empty() {
            break;
        }
        let ahead = (groups.len() > 1 && round < MAX_CATCH_UP_ROUNDS)
            .then(|| lead(&groups))
            .flatten();
        let Some(lead) = ahead else {
            // Together, or apart for good: every group reads now, side by
            // side, to the end.
            let runs = groups
                .iter()
                .map(|(from, members)| run_members(jobs, members, from, None, stop));
            let outcomes = futures::future::join_all(runs).await;
            for ((_, members), outcome) in groups.iter().zip(outcomes) {
                settle(members, outcome, &mut reports, &mut results, true);
            }
            break;
        };
        // The groups behind catch up (to where the lead stands, when they
        // have nothing half delivered; a half-delivered window is finished
        // first, whatever its end); the lead waits for them.
        let behind: Vec<&(Progress, Vec<usize>)> = groups
            .iter()
            .enumerate()
            .filter(|(g, _)| *g != lead)
            .map(|(_, group)| group)
            .collect();
        let runs = behind.iter().map(|(from, members)| {
            let until = match (&from.partial, &groups[lead].0.cursor) {
                (None, Cursor::Window { end }) => Some(*end),
                _ => None,
            };
            run_members(jobs, members, from, until, stop)
        });
        let outcomes = futures::future::join_all(runs).await;
        for ((_, members), outcome) in behind.into_iter().zip(outcomes) {
            settle(members, outcome, &mut reports, &mut results, false);
        }
        if stop.draining() || stop.now() {
            for (report, result) in reports.iter_mut().zip(&results) {
                if result.is_none() {
                    report.stopped = true;
                }
            }
            break;
        }
    }
    reports
        .into_iter()
        .zip(results)
        .map(|(report, result)| (report, result.unwrap_or(Ok(()))))
        .collect()
}

type Outcome = Vec<(JobReport, Result<(), JobError>)>;

async fn run_members(
    jobs: &[Job<'_>],
    members: &[usize],
    from: &Progress,
    until: Option<i64>,
    stop: &Stop,
) -> Outcome {
    let group: Vec<&Job<'_>> = members.iter().map(|&i| &jobs[i]).collect();
    let mut reports: Vec<JobReport> = members.iter().map(|_| JobReport::default()).collect();
    let results = run_group(&group, &mut reports, from, until, stop).await;
    reports.into_iter().zip(results).collect()
}

/// Adds a group's run to its jobs' reports; a job that failed, was
/// stopped, or (when `last`) simply ran is done.
fn settle(
    members: &[usize],
    outcome: Outcome,
    reports: &mut [JobReport],
    results: &mut [Option<Result<(), JobError>>],
    last: bool,
) {
    for (&i, (report, result)) in members.iter().zip(outcome) {
        let done = last || report.stopped || result.is_err();
        reports[i].add(report);
        if done {
            results[i] = Some(result);
        }
    }
}

/// Jobs by where they stand, in the order first seen.
fn groups(standing: Vec<(usize, Progress)>) -> Vec<(Progress, Vec<usize>)> {
    let mut groups: Vec<(Progress, Vec<usize>)> = Vec::new();
    for (i, p) in standing {
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, members)) => members.push(i),
            None => groups.push((p, vec![i])),
        }
    }
    groups
}

/// The group furthest ahead (nothing half delivered preferred at the same
/// place), or `None` when the places cannot be compared (local tables read
/// from different file contents).
fn lead(groups: &[(Progress, Vec<usize>)]) -> Option<usize> {
    let mut fingerprint = None;
    let mut best: Option<(usize, (i128, bool))> = None;
    for (g, (p, _)) in groups.iter().enumerate() {
        let at = match &p.cursor {
            Cursor::Start => i128::MIN,
            Cursor::Window { end } => i128::from(*end),
            Cursor::File(f) => {
                if *fingerprint.get_or_insert(&f.fingerprint) != &f.fingerprint {
                    return None;
                }
                i128::from(f.offset)
            }
        };
        let key = (at, p.partial.is_none());
        if best.is_none_or(|(_, b)| key > b) {
            best = Some((g, key));
        }
    }
    best.map(|(g, _)| g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FilePosition;

    fn window(end: i64) -> Progress {
        Progress::at(Cursor::Window { end })
    }

    #[test]
    fn jobs_at_one_place_share_a_group_and_the_furthest_leads() {
        let g = groups(vec![(0, window(10)), (1, window(20)), (2, window(10))]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].1, vec![0, 2]);
        assert_eq!(lead(&g), Some(1));
        let g = groups(vec![(0, Progress::default()), (1, window(5))]);
        assert_eq!(lead(&g), Some(1), "a job with nothing delivered is behind");
    }

    #[test]
    fn files_with_different_contents_cannot_be_compared() {
        let file = |offset, fingerprint: &str| {
            Progress::at(Cursor::File(FilePosition {
                offset,
                rows: 0,
                fingerprint: fingerprint.into(),
            }))
        };
        let g = groups(vec![(0, file(10, "a")), (1, file(20, "a"))]);
        assert_eq!(lead(&g), Some(1));
        let g = groups(vec![(0, file(10, "a")), (1, file(20, "b"))]);
        assert_eq!(lead(&g), None);
    }
}
