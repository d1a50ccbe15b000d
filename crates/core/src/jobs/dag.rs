//! Job dependencies (Chronos's `parents`): which dependent jobs may run, and the checks a
//! new or changed job's parents must pass (known, no cycle). Pure functions over a map of
//! job name -> parents.

use std::collections::{BTreeMap, BTreeSet};

/// Why a job's parents are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("parent {parent:?} of {job:?} is not a job")]
    UnknownParent { job: String, parent: String },
    #[error("{job:?} cannot be its own parent")]
    OwnParent { job: String },
    #[error("parents would make a cycle: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

/// Checks that `job` with `parents` fits into `graph` (every other job's parents): each
/// parent exists (in `graph`, or is `job` itself, refused), and no chain of parents leads
/// back to `job`. The cycle, when there is one, is named in order (`a -> b -> a`).
pub fn check_parents(
    graph: &BTreeMap<String, Vec<String>>,
    job: &str,
    parents: &[String],
) -> Result<(), DagError> {
    for parent in parents {
        if parent == job {
            return Err(DagError::OwnParent {
                job: job.to_string(),
            });
        }
        if !graph.contains_key(parent) {
            return Err(DagError::UnknownParent {
                job: job.to_string(),
                parent: parent.clone(),
            });
        }
    }
    // A cycle through `job`: a path from one of its parents, up through their parents,
    // back to `job`. Depth first without recursion (a long chain must not exhaust the
    // stack inside the state machine), remembering each name's way down.
    let parents_of = |name: &str| -> Vec<String> {
        if name == job {
            parents.to_vec()
        } else {
            graph.get(name).cloned().unwrap_or_default()
        }
    };
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut stack: Vec<String> = vec![job.to_string()];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(name) = stack.pop() {
        for parent in parents_of(&name) {
            if parent == job {
                // Back at `job`: the way from it, in the direction runs flow.
                let mut cycle = vec![job.to_string(), name.clone()];
                let mut at = name.clone();
                while let Some(before) = came_from.get(&at) {
                    cycle.push(before.clone());
                    at = before.clone();
                }
                if cycle.last().map(String::as_str) == Some(job) && cycle.len() > 2 {
                    cycle.pop();
                }
                cycle.push(job.to_string());
                cycle.dedup();
                return Err(DagError::Cycle { cycle });
            }
            if seen.insert(parent.clone()) {
                came_from.insert(parent.clone(), name.clone());
                stack.push(parent);
            }
        }
    }
    Ok(())
}

/// Chronos's rule for a dependent job: it runs once every parent has succeeded since the
/// dependent last started (`last_started_ms`; never started: every parent has succeeded at
/// least once). `last_success_ms` gives a parent's last success.
pub fn ready(
    parents: &[String],
    last_started_ms: Option<u64>,
    last_success_ms: &dyn Fn(&str) -> Option<u64>,
) -> bool {
    !parents.is_empty()
        && parents.iter().all(|parent| match last_success_ms(parent) {
            Some(success) => last_started_ms.is_none_or(|started| success > started),
            None => false,
        })
}

/// The children of `job` (jobs naming it as a parent), in name order.
pub fn children<'a>(graph: &'a BTreeMap<String, Vec<String>>, job: &str) -> Vec<&'a str> {
    graph
        .iter()
        .filter(|(_, parents)| parents.iter().any(|p| p == job))
        .map(|(name, _)| name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(job, parents)| {
                (
                    job.to_string(),
                    parents.iter().map(|p| p.to_string()).collect(),
                )
            })
            .collect()
    }

    fn names(parents: &[&str]) -> Vec<String> {
        parents.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn parents_must_exist_and_make_no_cycle() {
        let g = graph(&[
            ("extract", &[]),
            ("transform", &["extract"]),
            ("load", &["transform"]),
        ]);
        assert_eq!(
            check_parents(&g, "report", &names(&["load", "extract"])),
            Ok(())
        );
        assert_eq!(
            check_parents(&g, "report", &names(&["lod"])),
            Err(DagError::UnknownParent {
                job: "report".into(),
                parent: "lod".into()
            })
        );
        assert_eq!(
            check_parents(&g, "load", &names(&["load"])),
            Err(DagError::OwnParent { job: "load".into() })
        );
        // extract made a child of load: load -> extract -> transform -> load.
        let cycle = check_parents(&g, "extract", &names(&["load"])).unwrap_err();
        assert_eq!(
            cycle.to_string(),
            "parents would make a cycle: extract -> transform -> load -> extract"
        );
        // A diamond is no cycle.
        let diamond = graph(&[("a", &[]), ("b", &["a"]), ("c", &["a"])]);
        assert_eq!(check_parents(&diamond, "d", &names(&["b", "c"])), Ok(()));
        assert_eq!(children(&diamond, "a"), vec!["b", "c"]);
    }

    #[test]
    fn a_child_runs_once_all_parents_succeeded_since_it_last_started() {
        let parents = names(&["a", "b"]);
        let success = |a: Option<u64>, b: Option<u64>| move |p: &str| if p == "a" { a } else { b };
        assert!(
            !ready(&parents, None, &success(Some(10), None)),
            "b never succeeded"
        );
        assert!(ready(&parents, None, &success(Some(10), Some(12))));
        // It started at 15: both must succeed again after that.
        assert!(!ready(&parents, Some(15), &success(Some(20), Some(12))));
        assert!(ready(&parents, Some(15), &success(Some(20), Some(16))));
        assert!(
            !ready(&[], None, &success(Some(1), Some(1))),
            "no parents: not dependent"
        );
    }
}
