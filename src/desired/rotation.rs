//! Key rotation, decided without I/O.
//!
//! A rotation creates a second key, keeps it in its pending store (a Secret of its own, see
//! `controller::credentials::pending`) while STS does not accept it yet, for at most the propagation window
//! counted from its creation ([`next_step`], checked once per pass), records the old key as retiring (a
//! user tag, `<id>:<deadline>`), and only then writes the new key to the Secret; the old key is deleted
//! once its overlap is over. A new key the window ends without STS accepting is deleted, and the next
//! attempt waits ([`retry_at`], recorded in a user tag). The record lives in AWS, not in a status a tenant can write: an interrupted rotation is
//! recognised by a retiring record that names the key still in the Secret, and is undone (the new key,
//! whose secret was never stored, is deleted) before it is tried again.

use std::time::Duration;

/// User tags of the rotation state.
pub mod tag {
    /// `<access key id>:<unix seconds>`: the key that left the Secret, and when it is deleted.
    pub const RETIRING: &str = "bucketbroker.io/retiring-key";
    /// A digest of the last `bucketbroker.io/rotate` annotation value acted on.
    pub const ROTATED_FOR: &str = "bucketbroker.io/rotated-for";
    /// `<failures in a row>:<unix seconds>`: rotations whose new key STS did not accept in time, and when
    /// the last one gave up; the next attempt waits ([`super::retry_at`]). Removed by a rotation that works.
    pub const FAILED: &str = "bucketbroker.io/rotation-failed";
}

/// The wait after the first failed rotation; it doubles with each failure in a row, to at most
/// [`LONGEST_RETRY`]: a key STS never accepts costs one key per wait, not one per pass.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
pub const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// The annotation that asks for one rotation now, once per value.
pub const ROTATE_ANNOTATION: &str = "bucketbroker.io/rotate";

/// The Secret annotation that changes with every new key, for tools that restart pods on a change
/// (for example stakater Reloader).
pub const KEY_ANNOTATION: &str = "bucketbroker.io/access-key-id";

/// How long an old key keeps working after the Secret holds the new one, unless the spec says otherwise.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(3600);

/// A duration written as a number and a unit: `s`, `m`, `h` or `d` (`90d`, `1h`, `30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("{s:?} is not a duration such as 90d, 12h, 30m or 45s");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    let seconds = number.checked_mul(unit).ok_or_else(invalid)?;
    if seconds == 0 {
        return Err(format!("{s:?}: must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

/// The rotation rules in force for one credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rotate keys older than this; `None`: only on request.
    pub interval: Option<Duration>,
    pub overlap: Duration,
}

/// The policy from the spec's `interval` and `overlap` and the platform's `--max-key-age`, which is both the
/// default and the ceiling of the interval.
pub fn policy(
    interval: Option<&str>,
    overlap: Option<&str>,
    max_key_age: Option<Duration>,
) -> Result<Policy, String> {
    let interval =
        interval.map(parse_duration).transpose().map_err(|e| format!("keyRotation.interval: {e}"))?;
    let overlap = overlap.map(parse_duration).transpose().map_err(|e| format!("keyRotation.overlap: {e}"))?;
    let interval = match (interval, max_key_age) {
        (Some(own), Some(ceiling)) => Some(own.min(ceiling)),
        (own, ceiling) => own.or(ceiling),
    };
    Ok(Policy { interval, overlap: overlap.unwrap_or(DEFAULT_OVERLAP) })
}

/// Why a key is rotated now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Older than the interval.
    Age,
    /// A new `bucketbroker.io/rotate` value.
    Requested,
}

/// Whether the key in the Secret, created at `created` (unix seconds), is due for rotation at `now`.
/// `requested` is the annotation's value, `handled` the digest of the last value acted on.
pub fn due(
    now: i64,
    created: i64,
    policy: &Policy,
    requested: Option<&str>,
    handled: Option<&str>,
) -> Option<Due> {
    if requested.is_some_and(|value| Some(digest(value).as_str()) != handled) {
        return Some(Due::Requested);
    }
    let interval = policy.interval?.as_secs() as i64;
    (now.saturating_sub(created) >= interval).then_some(Due::Age)
}

/// When the key created at `created` is next due for rotation by age.
pub fn next_rotation(created: i64, policy: &Policy) -> Option<i64> {
    policy.interval.map(|i| created.saturating_add(i.as_secs() as i64))
}

/// How status records the rotate annotation's value a rotation answered (`keyRotation.answered`): the
/// value itself, or its digest when it is longer than 64 characters.
pub fn answered(value: &str) -> String {
    if value.chars().count() <= 64 { value.to_owned() } else { format!("digest:{}", digest(value)) }
}

/// Whether the rotation the annotation `requested` asks for is recorded as answered (`answered`, from
/// status: a hint, deciding only how urgent the next pass is).
pub fn is_answered(requested: Option<&str>, answered_in_status: Option<&str>) -> bool {
    requested.is_none_or(|value| answered_in_status == Some(answered(value).as_str()))
}

/// A short, stable digest of an annotation value (FNV-1a, 64 bits), to record in a tag: tag values are
/// short and restricted in characters, annotation values are neither.
pub fn digest(value: &str) -> String {
    format!("{:016x}", super::names::stable_hash(value))
}

/// A retiring record, as kept in the user tag [`tag::RETIRING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retiring<'a> {
    /// The key that left the Secret.
    pub id: &'a str,
    /// The unix second it is deleted at.
    pub deadline: i64,
    /// The digest of the `bucketbroker.io/rotate` value the rotation answered, if it answered one: recorded
    /// before the Secret switches, so that a pass interrupted after the switch still counts the request
    /// as done.
    pub request: Option<&'a str>,
}

/// The retiring record: `<id>:<deadline>` or `<id>:<deadline>:<request digest>`.
pub fn retiring(id: &str, deadline: i64, request: Option<&str>) -> String {
    match request {
        Some(request) => format!("{id}:{deadline}:{request}"),
        None => format!("{id}:{deadline}"),
    }
}

/// Reads a retiring record.
pub fn parse_retiring(value: &str) -> Option<Retiring<'_>> {
    let mut parts = value.splitn(3, ':');
    let id = parts.next().filter(|id| !id.is_empty())?;
    let deadline = parts.next()?.parse().ok()?;
    Some(Retiring { id, deadline, request: parts.next().filter(|r| !r.is_empty()) })
}

/// How far AWS's clock may be ahead of ours: a key "created" later than this is a forged time (a
/// hint a tenant edited), never within a window.
const CLOCK_SKEW: i64 = 60;

/// Whether a key created at `created` (unix seconds) is still within the propagation `window` at `now`:
/// the time IAM may take to list it and STS to accept it.
pub fn within_window(created: i64, now: i64, window: Duration) -> bool {
    let age = now.saturating_sub(created);
    (-CLOCK_SKEW..=window.as_secs() as i64).contains(&age)
}

/// Whether the key a rotation keeps in its pending store (created at `created`) is still that rotation's
/// new key: not the key the Secret already holds (a rotation that switched before its store was
/// cleared), and listed by IAM, or young enough that IAM may not list it yet.
pub fn pending_holds(
    id: &str,
    created: i64,
    in_secret: Option<&str>,
    listed: bool,
    now: i64,
    window: Duration,
) -> bool {
    in_secret.is_some_and(|current| current != id) && (listed || within_window(created, now, window))
}

/// The failure record: `<failures>:<unix seconds of the last>`.
pub fn failed(failures: u32, at: i64) -> String {
    format!("{failures}:{at}")
}

/// Reads a failure record.
pub fn parse_failed(value: &str) -> Option<(u32, i64)> {
    let (failures, at) = value.split_once(':')?;
    Some((failures.parse().ok()?, at.parse().ok()?))
}

/// When a rotation may be tried again after `failures` in a row, the last at `at`.
pub fn retry_at(failures: u32, at: i64) -> i64 {
    let wait = FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(LONGEST_RETRY);
    at.saturating_add(wait.as_secs() as i64)
}

/// What STS said of a rotation's new key (the AWS layer's answer, without I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Accepted,
    /// Not known yet: IAM's propagation delay.
    NotYetKnown,
    /// Known, but the secret is refused.
    WrongSecret,
}

/// What a rotation does next with its new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// STS accepts it: the Secret switches to it.
    Switch,
    /// STS does not know it yet, within the window: look again soon, the old key stays in the Secret.
    Wait,
    /// The window passed without STS accepting it, or STS refuses its secret: it is deleted.
    GiveUp,
}

/// The next step of a rotation whose new key, created at `created`, got `check` at `now`.
pub fn next_step(check: Check, created: i64, now: i64, window: Duration) -> Next {
    match check {
        Check::Accepted => Next::Switch,
        Check::NotYetKnown if within_window(created, now, window) => Next::Wait,
        Check::NotYetKnown | Check::WrongSecret => Next::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_days() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("99999999999999999d").is_err(), "no overflow");
    }

    #[test]
    fn the_platform_ceiling_caps_and_defaults_the_interval() {
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(policy(Some("90d"), None, day).map(|p| p.interval), Ok(day));
        assert_eq!(policy(Some("1h"), None, day).map(|p| p.interval), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(policy(None, None, day).map(|p| p.interval), Ok(day));
        assert_eq!(policy(None, None, None), Ok(Policy { interval: None, overlap: DEFAULT_OVERLAP }));
        assert_eq!(policy(None, Some("5m"), None).map(|p| p.overlap), Ok(Duration::from_secs(300)));
        assert!(
            policy(Some("soon"), None, None).expect_err("not a duration").contains("keyRotation.interval")
        );
    }

    #[test]
    fn a_key_is_due_by_age_or_by_a_new_request_once() {
        let hourly = Policy { interval: Some(Duration::from_secs(3600)), overlap: DEFAULT_OVERLAP };
        assert_eq!(due(1000 + 3599, 1000, &hourly, None, None), None);
        assert_eq!(due(1000 + 3600, 1000, &hourly, None, None), Some(Due::Age));
        let never = Policy { interval: None, overlap: DEFAULT_OVERLAP };
        assert_eq!(due(i64::MAX, 0, &never, None, None), None);
        assert_eq!(due(0, 0, &never, Some("now"), None), Some(Due::Requested));
        assert_eq!(due(0, 0, &never, Some("now"), Some(&digest("now"))), None, "once per value");
        assert_eq!(due(0, 0, &never, Some("again"), Some(&digest("now"))), Some(Due::Requested));
        assert_eq!(next_rotation(1000, &hourly), Some(4600));
    }

    #[test]
    fn records_round_trip() {
        let plain = retiring("AKIA1", 42, None);
        assert_eq!(parse_retiring(&plain), Some(Retiring { id: "AKIA1", deadline: 42, request: None }));
        let requested = retiring("AKIA1", 42, Some("00ff"));
        assert_eq!(parse_retiring(&requested).and_then(|r| r.request), Some("00ff"));
        assert_eq!(parse_retiring("garbage"), None);
        assert_eq!(parse_retiring(":5"), None);
        assert_eq!(digest("2026-11-29"), digest("2026-11-29"));
        assert_ne!(digest("a"), digest("b"));
        assert_eq!(digest("").len(), 16);
    }

    #[test]
    fn a_request_is_answered_when_status_records_its_value() {
        assert!(is_answered(None, None), "nothing asked");
        assert!(!is_answered(Some("1"), None));
        assert!(!is_answered(Some("2"), Some("1")), "a new value");
        assert!(is_answered(Some("2"), Some("2")));
        let long = "x".repeat(65);
        assert!(answered(&long).starts_with("digest:") && answered(&long).len() < 30);
        assert!(is_answered(Some(&long), Some(&answered(&long))));
    }

    #[test]
    fn a_new_key_gets_the_window_and_no_more() {
        let minute = Duration::from_secs(60);
        assert_eq!(next_step(Check::NotYetKnown, 1000, 1000, minute), Next::Wait);
        assert_eq!(next_step(Check::NotYetKnown, 1000, 1008, minute), Next::Wait, "past 7.5 s: still waits");
        assert_eq!(next_step(Check::NotYetKnown, 1000, 1060, minute), Next::Wait);
        assert_eq!(next_step(Check::NotYetKnown, 1000, 1061, minute), Next::GiveUp);
        assert_eq!(next_step(Check::Accepted, 1000, 5000, minute), Next::Switch);
        assert_eq!(next_step(Check::WrongSecret, 1000, 1001, minute), Next::GiveUp);
        // A creation time far in the future (an edited hint) is never within the window.
        assert!(!within_window(10_000, 1000, minute));
        assert!(within_window(1030, 1000, minute), "some clock skew is tolerated");
    }

    #[test]
    fn failed_rotations_back_off() {
        assert_eq!(parse_failed(&failed(3, 1000)), Some((3, 1000)));
        assert_eq!(parse_failed("x:1"), None);
        assert_eq!(retry_at(1, 1000), 1030);
        assert_eq!(retry_at(2, 1000), 1060);
        assert_eq!(retry_at(3, 1000), 1120);
        assert_eq!(retry_at(40, 1000), 1000 + 3600, "at most an hour");
    }

    #[test]
    fn a_pending_key_is_the_rotations_while_iam_lists_it_or_may_not_yet() {
        let minute = Duration::from_secs(60);
        assert!(pending_holds("NEW", 1000, Some("OLD"), true, 1000, minute));
        assert!(pending_holds("NEW", 1000, Some("OLD"), false, 1010, minute), "not listed yet");
        assert!(!pending_holds("NEW", 1000, Some("OLD"), false, 1100, minute), "not listed: gone");
        assert!(
            pending_holds("NEW", 1000, Some("OLD"), true, 1100, minute),
            "listed: the window decides elsewhere"
        );
        assert!(!pending_holds("NEW", 1000, Some("NEW"), true, 1000, minute), "the Secret switched already");
        assert!(!pending_holds("NEW", 1000, None, true, 1000, minute), "no key in the Secret to rotate");
    }
}
