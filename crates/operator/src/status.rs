//! Conditions, the Kubernetes API conventions way.
//!
//! - One condition per `type`; setting a type replaces it in place (order is kept, new types
//!   are appended).
//! - `lastTransitionTime` changes only when `status` changes; a new reason, message or
//!   generation with the same status keeps the old time.
//! - Every condition carries the `metadata.generation` it was computed from
//!   (`observedGeneration`).
//!
//! Because unchanged conditions keep their exact value, a reconcile that observes nothing new
//! produces a status equal to the stored one, and the controllers skip the write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{Timestamp, TimestampRound, Unit};

/// The condition every vmcp kind reports: is the object usable? (`VirtualMCPServer`,
/// `MCPServer`, `MCPGroup`; the controllers re-export it.)
pub const READY: &str = "Ready";

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It is not known (yet).
    Unknown,
}

impl Status {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// The current time at the API's precision (seconds), so that a stored time compares equal to
/// a computed one.
pub fn now() -> Time {
    let ts = Timestamp::now();
    Time(ts.round(TimestampRound::new().smallest(Unit::Second)).unwrap_or(ts))
}

/// A condition to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition<'a> {
    /// CamelCase type, e.g. `Ready`.
    pub type_: &'a str,
    /// Its status.
    pub status: Status,
    /// CamelCase reason, never empty.
    pub reason: &'a str,
    /// Human-readable message (may be empty).
    pub message: String,
}

impl<'a> NewCondition<'a> {
    /// A condition of `type_`.
    pub fn new(
        type_: &'a str,
        status: impl Into<Status>,
        reason: &'a str,
        message: impl Into<String>,
    ) -> Self {
        Self { type_, status: status.into(), reason, message: message.into() }
    }
}

/// Sets `new` in `conditions` (see the module documentation). Returns whether anything
/// changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    new: NewCondition<'_>,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let reason = if new.reason.is_empty() { "Unknown" } else { new.reason };
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => {
            let before = c.clone();
            if c.status != new.status.as_str() {
                c.status = new.status.as_str().into();
                c.last_transition_time = now.clone();
            }
            c.reason = reason.into();
            c.message = new.message;
            c.observed_generation = generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: new.type_.into(),
                status: new.status.as_str().into(),
                reason: reason.into(),
                message: new.message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// The condition of `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Is the condition of `type_` set and `True`?
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Did `type_` go from anything else to `status` between `before` and `after`?
pub fn transitioned_to(
    before: &[Condition],
    after: &[Condition],
    type_: &str,
    status: Status,
) -> bool {
    let was = find(before, type_).map(|c| c.status.as_str());
    let is = find(after, type_).map(|c| c.status.as_str());
    is == Some(status.as_str()) && was != Some(status.as_str())
}

/// Removes the condition of `type_`; returns whether it was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn new_condition_is_appended_with_time_and_generation() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            NewCondition::new("Ready", true, "Ok", "fine"),
            Some(3),
            &t(10)
        ));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].reason, "Ok");
        assert_eq!(c[0].message, "fine");
        assert_eq!(c[0].observed_generation, Some(3));
        assert_eq!(c[0].last_transition_time, t(10));
    }

    #[test]
    fn same_status_keeps_transition_time() {
        let mut c = Vec::new();
        set_condition(&mut c, NewCondition::new("Ready", false, "Pending", "a"), Some(1), &t(10));
        // Same everything: no change at all.
        assert!(!set_condition(
            &mut c,
            NewCondition::new("Ready", false, "Pending", "a"),
            Some(1),
            &t(20)
        ));
        assert_eq!(c[0].last_transition_time, t(10));
        // New reason, message and generation, same status: changed, time kept.
        assert!(set_condition(
            &mut c,
            NewCondition::new("Ready", false, "Degraded", "b"),
            Some(2),
            &t(30)
        ));
        assert_eq!(c[0].last_transition_time, t(10));
        assert_eq!((c[0].reason.as_str(), c[0].message.as_str()), ("Degraded", "b"));
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut c = Vec::new();
        set_condition(&mut c, NewCondition::new("Ready", false, "Pending", ""), Some(1), &t(10));
        assert!(set_condition(
            &mut c,
            NewCondition::new("Ready", true, "Ready", ""),
            Some(1),
            &t(40)
        ));
        assert_eq!(c[0].last_transition_time, t(40));
        assert_eq!(c[0].status, "True");
    }

    #[test]
    fn replace_by_type_keeps_order_and_others() {
        let mut c = Vec::new();
        set_condition(&mut c, NewCondition::new("A", true, "R", ""), None, &t(1));
        set_condition(&mut c, NewCondition::new("B", true, "R", ""), None, &t(1));
        set_condition(&mut c, NewCondition::new("A", false, "R2", ""), None, &t(2));
        let types: Vec<_> = c.iter().map(|x| x.type_.as_str()).collect();
        assert_eq!(types, ["A", "B"]);
        assert_eq!(find(&c, "B").unwrap().last_transition_time, t(1));
        assert!(!is_true(&c, "A"));
        assert!(is_true(&c, "B"));
        assert!(remove_condition(&mut c, "A"));
        assert!(!remove_condition(&mut c, "A"));
    }

    #[test]
    fn empty_reason_is_replaced() {
        let mut c = Vec::new();
        set_condition(&mut c, NewCondition::new("A", Status::Unknown, "", ""), None, &t(1));
        assert_eq!(c[0].reason, "Unknown");
        assert_eq!(c[0].status, "Unknown");
    }

    #[test]
    fn transitions() {
        let mut before = Vec::new();
        set_condition(&mut before, NewCondition::new("A", true, "R", ""), None, &t(1));
        let mut after = before.clone();
        assert!(!transitioned_to(&before, &after, "A", Status::True));
        set_condition(&mut after, NewCondition::new("A", false, "R", ""), None, &t(2));
        assert!(transitioned_to(&before, &after, "A", Status::False));
        assert!(transitioned_to(&[], &after, "A", Status::False));
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
