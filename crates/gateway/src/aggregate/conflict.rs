//! Conflict resolution: chooses the exposed name of every tool and prompt candidate and which
//! candidates are hidden, per `aggregation.conflictResolution`.

use std::collections::HashMap;

use vmcp_types::config::{AggregationConfig, ConflictResolution};

use super::AggregationError;
use super::capabilities::Candidate;

/// A candidate that is exposed, with its exposed name.
#[derive(Debug, Clone)]
pub(super) struct Resolved<'a> {
    /// The tool or prompt.
    pub(super) candidate: Candidate<'a>,
    /// The name clients see.
    pub(super) exposed: String,
}

/// Resolves `candidates` (in backend order) of one `kind` ("tool" or "prompt"); returns the
/// exposed ones in the same order, or the first conflict that cannot be resolved.
pub(super) fn resolve<'a>(
    config: &AggregationConfig,
    kind: &'static str,
    candidates: &[Candidate<'a>],
) -> Result<Vec<Resolved<'a>>, AggregationError> {
    let names: Vec<String> = candidates
        .iter()
        .map(|c| match (c.renamed(), config.conflict_resolution) {
            (Some(name), _) => name.to_owned(),
            (None, ConflictResolution::Prefix) => prefixed(&config.prefix_format, c),
            (None, _) => c.original.to_owned(),
        })
        .collect();
    let groups = group_by_name(&names);
    let keep = match config.conflict_resolution {
        ConflictResolution::Prefix | ConflictResolution::Manual => {
            check_unique(config.conflict_resolution, kind, &names, &groups, candidates)?;
            vec![true; candidates.len()]
        }
        ConflictResolution::Priority => {
            let ranks: Vec<usize> =
                candidates.iter().map(|c| priority_rank(&config.priority_order, c)).collect();
            priority_winners(kind, &names, &groups, candidates, &ranks)?
        }
    };
    Ok(candidates
        .iter()
        .zip(names)
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|((candidate, exposed), _)| Resolved { candidate: *candidate, exposed })
        .collect())
}

/// `prefix_format` with `{backend}` replaced by the candidate's backend, followed by its name.
fn prefixed(prefix_format: &str, candidate: &Candidate<'_>) -> String {
    let mut name = prefix_format.replace("{backend}", candidate.backend);
    name.push_str(candidate.original);
    name
}

/// Indices of `names` grouped by equal name, groups ordered by their first index.
fn group_by_name(names: &[String]) -> Vec<Vec<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let group = *index.entry(name).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if let Some(members) = groups.get_mut(group) {
            members.push(i);
        }
    }
    groups
}

/// Backend names of the candidates at `members`.
fn backends_of(candidates: &[Candidate<'_>], members: &[usize]) -> Vec<String> {
    members.iter().filter_map(|&i| candidates.get(i)).map(|c| c.backend.to_string()).collect()
}

/// For `prefix` and `manual`: errors on the first name exposed more than once. Under `manual`
/// a name that two or more backends offer without an override renaming it is an unresolved
/// conflict (naming those backends); any other clash is a duplicate exposed name.
fn check_unique(
    strategy: ConflictResolution,
    kind: &'static str,
    names: &[String],
    groups: &[Vec<usize>],
    candidates: &[Candidate<'_>],
) -> Result<(), AggregationError> {
    let Some(members) = groups.iter().find(|g| g.len() > 1) else {
        return Ok(());
    };
    let name = members.first().and_then(|&i| names.get(i)).cloned().unwrap_or_default();
    let untouched: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| candidates.get(i).is_some_and(|c| c.renamed().is_none()))
        .collect();
    Err(if strategy == ConflictResolution::Manual && untouched.len() > 1 {
        AggregationError::UnresolvedConflict {
            kind,
            name,
            backends: backends_of(candidates, &untouched),
        }
    } else {
        AggregationError::DuplicateExposedName {
            kind,
            name,
            backends: backends_of(candidates, members),
        }
    })
}

/// Priority rank of a candidate's backend (lower wins): its position in `priorityOrder`, else
/// after all of those, in backend order.
fn priority_rank(priority_order: &[String], candidate: &Candidate<'_>) -> usize {
    priority_order
        .iter()
        .position(|p| p.as_str() == &**candidate.backend)
        .unwrap_or(priority_order.len() + candidate.rank)
}

/// For `priority`: in every group of equal names the candidate of the highest-priority
/// backend is kept and the others hidden; a tie (one backend exposing a name twice through an
/// override) is a duplicate exposed name.
fn priority_winners(
    kind: &'static str,
    names: &[String],
    groups: &[Vec<usize>],
    candidates: &[Candidate<'_>],
    ranks: &[usize],
) -> Result<Vec<bool>, AggregationError> {
    let mut keep = vec![false; candidates.len()];
    for members in groups {
        let rank_of = |i: &usize| ranks.get(*i).copied().unwrap_or(usize::MAX);
        let Some(best) = members.iter().map(rank_of).min() else {
            continue;
        };
        let winners: Vec<usize> = members.iter().copied().filter(|i| rank_of(i) == best).collect();
        match winners.as_slice() {
            [winner] => {
                if let Some(slot) = keep.get_mut(*winner) {
                    *slot = true;
                }
            }
            tied => {
                let name = tied.first().and_then(|&i| names.get(i)).cloned().unwrap_or_default();
                let backends = backends_of(candidates, tied);
                return Err(AggregationError::DuplicateExposedName { kind, name, backends });
            }
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn groups_keep_first_appearance_order() {
        let names: Vec<String> = ["b", "a", "b", "c", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(group_by_name(&names), vec![vec![0, 2], vec![1, 4], vec![3]]);
    }

    #[test]
    fn prefix_replaces_every_placeholder() {
        let backend: Arc<str> = "gh".into();
        let source = serde_json::Value::Null;
        let candidate = Candidate {
            rank: 0,
            backend: &backend,
            original: "search",
            source: &source,
            patch: None,
        };
        assert_eq!(prefixed("{backend}_", &candidate), "gh_search");
        assert_eq!(prefixed("{backend}.{backend}/", &candidate), "gh.gh/search");
    }
}
