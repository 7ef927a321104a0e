//! Text that tenants read (conditions, events) without the platform's AWS identity in it.
//!
//! AWS error messages name the caller ("User: arn:aws:sts::123456789012:assumed-role/bucket-broker/… is
//! not authorized to perform …") and sometimes the account. That is the platform team's business: a
//! tenant learns the controller role's ARN and the account id from nothing the controller writes for them.
//! The log keeps the full text.

/// What stands for the controller's role in tenant-visible text.
pub const ROLE: &str = "<the controller's AWS role>";
/// What stands for an account id in tenant-visible text.
pub const ACCOUNT: &str = "<account>";

/// `text` with every IAM role or STS session ARN replaced by [`ROLE`], and every account id (any other
/// ARN's included) by [`ACCOUNT`].
pub fn for_tenants(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("arn:") {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace() || "\"'`,;()<>[]{}".contains(c))
            .unwrap_or(candidate.len());
        // A sentence's full stop is not part of the ARN.
        let arn = candidate[..end].trim_end_matches('.');
        out.push_str(&redact_arn(arn));
        rest = &candidate[arn.len()..];
    }
    out.push_str(rest);
    redact_account_ids(&out)
}

/// `arn:partition:service:region:account:resource`: a role or a session of one becomes [`ROLE`].
fn redact_arn(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, service, _, _, resource] = parts.as_slice() else { return arn.to_owned() };
    let is_role = match *service {
        "iam" => resource.starts_with("role/"),
        "sts" => resource.starts_with("assumed-role/") || resource.starts_with("federated-user/"),
        _ => false,
    };
    if is_role { ROLE.to_owned() } else { arn.to_owned() }
}

/// Every run of exactly twelve digits standing on its own (an account id, alone or between an ARN's
/// colons) becomes [`ACCOUNT`]; digits that are part of a name or a uid (next to a letter, `-` or `.`) stay.
fn redact_account_ids(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let part_of_a_name = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || "-._".contains(*c));
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 0 {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let alone = !part_of_a_name(i.checked_sub(1).and_then(|b| chars.get(b)))
            && !part_of_a_name(chars.get(i + run));
        if run == 12 && alone {
            out.push_str(ACCOUNT);
        } else {
            out.extend(&chars[i..i + run]);
        }
        i += run;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_role_and_the_account_never_reach_tenants() {
        let denied = "iam CreateUser failed: AccessDenied: User: arn:aws:sts::123456789012:assumed-role/bucket-broker/\
                      botocore-session-1700000000 is not authorized to perform: iam:CreateUser on resource: \
                      arn:aws:iam::123456789012:user/bucket-broker/bb-x because no identity-based policy allows it";
        let redacted = for_tenants(denied);
        assert_eq!(
            redacted,
            "iam CreateUser failed: AccessDenied: User: <the controller's AWS role> is not authorized to perform: \
             iam:CreateUser on resource: arn:aws:iam::<account>:user/bucket-broker/bb-x because no identity-based \
             policy allows it"
        );
        assert_eq!(
            for_tenants("role arn:aws:iam::123456789012:role/bucket-broker."),
            format!("role {ROLE}.")
        );
        assert_eq!(for_tenants("(\"arn:aws-cn:iam::123456789012:role/x\")"), format!("(\"{ROLE}\")"));
        assert_eq!(for_tenants("account 123456789012 owns it"), "account <account> owns it");
    }

    #[test]
    fn everything_else_is_left_as_it_is() {
        for text in [
            "the bucket bb-0b6c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d still holds 3 objects",
            "the bucket bb-0b6c3d4e-5f60-4a1b-8c2d-123456789012 is a uid whose last part is all digits",
            "arn:aws:s3:::bucket-broker-x is private",
            "HTTP 503 after 1234567890123 ms",
            "request id 12345678901",
            "",
        ] {
            assert_eq!(for_tenants(text), text);
        }
    }
}
