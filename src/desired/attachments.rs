//! What the controller attaches to an IAM user besides its inline policy: the common managed policy
//! (`--common-user-policy-arn`) and the permissions boundary (`--permissions-boundary-arn`). When either
//! setting changes or is removed, users follow, but the controller only ever takes away what it put there
//! itself: each attachment it makes is recorded in a user tag, and a policy or boundary someone else
//! attached is left alone.

/// The user tags recording what the controller attached.
pub mod tag {
    pub const COMMON_POLICY: &str = "bucketbroker.io/common-policy";
    pub const PERMISSIONS_BOUNDARY: &str = "bucketbroker.io/permissions-boundary";
}

/// The steps that bring one attachment from what AWS has to what is wanted, in the order to take them:
/// apply, then remove, then record, so that an interrupted pass never forgets something it attached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Attach (or set) this.
    pub apply: Option<String>,
    /// Detach (or clear) this: the controller recorded it as its own, and it is no longer wanted.
    pub remove: Option<String>,
    /// Rewrite the record: `Some(None)` deletes the tag.
    pub record: Option<Option<String>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

/// The change for one attachment. `recorded` is the tag's value, `desired` the setting, and `is_present`
/// says whether AWS has an ARN attached now.
pub fn change(recorded: Option<&str>, desired: Option<&str>, is_present: impl Fn(&str) -> bool) -> Change {
    let apply = desired.filter(|d| !is_present(d)).map(str::to_owned);
    let remove = recorded.filter(|r| Some(*r) != desired && is_present(r)).map(str::to_owned);
    let record = (recorded != desired).then(|| desired.map(str::to_owned));
    Change { apply, remove, record }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "arn:aws:iam::1:policy/a";
    const B: &str = "arn:aws:iam::1:policy/b";
    const FOREIGN: &str = "arn:aws:iam::1:policy/someone-elses";

    fn attached<'a>(arns: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |arn| arns.contains(&arn)
    }

    #[test]
    fn a_new_setting_is_applied_and_recorded() {
        let got = change(None, Some(A), attached(&[]));
        assert_eq!(got, Change { apply: Some(A.into()), remove: None, record: Some(Some(A.into())) });
    }

    #[test]
    fn a_changed_setting_replaces_only_what_was_recorded() {
        let got = change(Some(A), Some(B), attached(&[A, FOREIGN]));
        assert_eq!(
            got,
            Change { apply: Some(B.into()), remove: Some(A.into()), record: Some(Some(B.into())) }
        );
    }

    #[test]
    fn a_removed_setting_takes_away_ours_and_never_someone_elses() {
        let got = change(Some(A), None, attached(&[A, FOREIGN]));
        assert_eq!(got, Change { apply: None, remove: Some(A.into()), record: Some(None) });
        let untouched = change(None, None, attached(&[FOREIGN]));
        assert!(untouched.is_empty(), "nothing recorded, nothing wanted: {untouched:?}");
    }

    #[test]
    fn a_converged_user_needs_nothing_and_repairs_drift() {
        assert!(change(Some(A), Some(A), attached(&[A])).is_empty());
        let detached_by_hand = change(Some(A), Some(A), attached(&[]));
        assert_eq!(detached_by_hand, Change { apply: Some(A.into()), ..Change::default() });
        let interrupted_before_record = change(Some(A), Some(B), attached(&[B]));
        assert_eq!(interrupted_before_record, Change { record: Some(Some(B.into())), ..Change::default() });
    }
}
