//! The verdict of a ghosts run, from its measured numbers alone.

use crate::cluster::Clearance;
use crate::scenario::opt;

/// What the run measured, as the verdict needs it.
#[derive(Debug)]
pub(super) struct Measured<'a> {
    /// Members, and views complete before the kill.
    pub members: usize,
    pub complete: usize,
    pub converged: bool,
    pub publishers: usize,
    pub publishers_up: usize,
    pub killed: bool,
    pub kill_error: Option<&'a str>,
    /// Surviving clients lost after the kill.
    pub dropped: usize,
    /// The clear times judged against the bound, and the final census.
    pub clearance: &'a Clearance,
}

/// Pass or fail, and why not.
#[derive(Debug, PartialEq)]
pub(super) struct Verdict {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// Judges a run: every surviving view cleared within the bound, nothing left or lost, the
/// node really killed and no surviving client dropped.
pub(super) fn verdict(m: &Measured<'_>) -> Verdict {
    let c = m.clearance;
    let mut reasons = Vec::new();
    if !m.converged {
        reasons.push(format!(
            "not every view was complete before the kill ({} of {}); nothing killed",
            m.complete, m.members
        ));
    } else if m.publishers_up < m.publishers {
        reasons.push(format!(
            "{} of {} publishers set up; nothing killed",
            m.publishers_up, m.publishers
        ));
    } else if !m.killed {
        reasons.push(m.kill_error.unwrap_or_default().to_owned());
    }
    if m.killed {
        if c.cleared < c.clients || c.clients == 0 {
            reasons.push(format!("{} of {} views cleared", c.cleared, c.clients));
        } else if let Some(max) = c.clear_max_ms.filter(|&x| x > c.bound_ms) {
            reasons.push(format!(
                "a view cleared {max:.0} ms after the kill, over the bound {:.0} ms",
                c.bound_ms
            ));
        }
        if c.ghosts_remaining > 0 {
            reasons.push(format!("{} ghosts left", c.ghosts_remaining));
        }
        if c.survivors_missing > 0 {
            reasons.push(format!("{} survivors missing", c.survivors_missing));
        }
        if m.dropped > 0 {
            reasons.push(format!("{} surviving clients dropped", m.dropped));
        }
    }
    Verdict {
        passed: c.passed && m.killed && m.dropped == 0,
        reasons,
    }
}

/// The one-line summary: why nothing was killed, or how the views cleared.
pub(super) fn headline(m: &Measured<'_>, v: &Verdict) -> String {
    if !m.killed {
        return v.reasons.first().cloned().unwrap_or_default();
    }
    let c = m.clearance;
    format!(
        "{} of {} views cleared, max {} ms after the kill (bound {:.0} ms): {}",
        c.cleared,
        c.clients,
        opt(c.clear_max_ms, 0),
        c.bound_ms,
        if v.passed { "PASS" } else { "FAIL" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::clearance;

    fn measured(c: &Clearance) -> Measured<'_> {
        Measured {
            members: 9,
            complete: 9,
            converged: true,
            publishers: 4,
            publishers_up: 4,
            killed: true,
            kill_error: None,
            dropped: 0,
            clearance: c,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let c = clearance(&[Some(7000.0), Some(7200.0)], 10.0, 500.0, 0, 0);
        let m = measured(&c);
        let v = verdict(&m);
        assert_eq!(
            v,
            Verdict {
                passed: true,
                reasons: vec![]
            }
        );
        assert_eq!(
            headline(&m, &v),
            "2 of 2 views cleared, max 7200 ms after the kill (bound 10500 ms): PASS"
        );
    }

    #[test]
    fn late_views_ghosts_and_drops_fail_with_their_reasons() {
        let late = clearance(&[Some(7000.0), Some(10_600.0)], 10.0, 500.0, 0, 0);
        let v = verdict(&measured(&late));
        assert!(!v.passed);
        assert_eq!(
            v.reasons,
            ["a view cleared 10600 ms after the kill, over the bound 10500 ms"]
        );
        let haunted = clearance(&[Some(7000.0), None], 10.0, 500.0, 1, 2);
        let m = Measured {
            dropped: 1,
            ..measured(&haunted)
        };
        let v = verdict(&m);
        assert!(!v.passed);
        assert_eq!(
            v.reasons,
            [
                "1 of 2 views cleared",
                "1 ghosts left",
                "2 survivors missing",
                "1 surviving clients dropped"
            ]
        );
        assert_eq!(
            headline(&m, &v),
            "1 of 2 views cleared, max - ms after the kill (bound 10500 ms): FAIL"
        );
        // A clean clearance still fails when a surviving client was dropped.
        let clean = clearance(&[Some(7000.0)], 10.0, 500.0, 0, 0);
        let v = verdict(&Measured {
            dropped: 2,
            ..measured(&clean)
        });
        assert!(!v.passed);
    }

    #[test]
    fn nothing_killed_fails_and_says_why() {
        let none = clearance(&[], 10.0, 500.0, 0, 0);
        let m = Measured {
            converged: false,
            complete: 7,
            killed: false,
            ..measured(&none)
        };
        let v = verdict(&m);
        assert!(!v.passed);
        assert_eq!(
            headline(&m, &v),
            "not every view was complete before the kill (7 of 9); nothing killed"
        );
        let m = Measured {
            publishers_up: 3,
            killed: false,
            ..measured(&none)
        };
        assert_eq!(
            headline(&m, &verdict(&m)),
            "3 of 4 publishers set up; nothing killed"
        );
        let m = Measured {
            killed: false,
            kill_error: Some("kill 42: EPERM"),
            ..measured(&none)
        };
        let v = verdict(&m);
        assert!(!v.passed);
        assert_eq!(headline(&m, &v), "kill 42: EPERM");
    }
}
