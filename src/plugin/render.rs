//! What the plugin prints, decided without I/O: credential formats, kubectl-aligned tables, ages, and
//! which objects are not Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::desired::secret::{LABEL, VCAP_SERVICES};

/// The Secret key of a BucketServiceKey's `cf service-key` output.
pub const SERVICE_KEY_JSON: &str = "credentials.json";

/// How `credentials` prints them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The whole `VCAP_SERVICES` value, as an app reads it (BucketBinding only).
    Vcap,
    /// The `credentials` object, as `cf service-key` printed it.
    Json,
    /// `KEY=value` lines of the Secret's environment keys, shell-quoted, for `eval` or an env file.
    Env,
}

/// The credentials in `format`, from the Secret's data. `service_key`: the data is a BucketServiceKey's.
pub fn credentials(
    data: &BTreeMap<String, Vec<u8>>,
    format: Format,
    service_key: bool,
) -> Result<String, String> {
    match format {
        Format::Vcap if service_key => {
            Err("A BucketServiceKey's Secret has no VCAP_SERVICES: use --format json \
             (its cf service-key output) or --format env."
                .to_owned())
        }
        Format::Vcap => Ok(pretty(&vcap_document(data)?)),
        Format::Json if service_key => Ok(pretty(&json_key(data, SERVICE_KEY_JSON)?)),
        Format::Json => {
            let document = vcap_document(data)?;
            let credentials = document
                .get(LABEL)
                .and_then(|entries| entries.get(0))
                .and_then(|entry| entry.get("credentials"))
                .ok_or_else(|| {
                    format!("The Secret's {VCAP_SERVICES} has no {LABEL} entry with credentials.")
                })?;
            Ok(pretty(credentials))
        }
        Format::Env => env_lines(data),
    }
}

fn vcap_document(data: &BTreeMap<String, Vec<u8>>) -> Result<Value, String> {
    json_key(data, VCAP_SERVICES)
}

fn json_key(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<Value, String> {
    let bytes = data.get(key).ok_or_else(|| format!("The Secret has no {key} key."))?;
    // The parser's message could quote the value, which is secret: say only where it broke.
    serde_json::from_slice(bytes)
        .map_err(|e| format!("The Secret's {key} is not valid JSON (line {}).", e.line()))
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Whether a Secret key is one an app reads as an environment variable (`AWS_*`, `BUCKET_NAME`): upper-case
/// names, but not the JSON documents.
fn is_env_key(key: &str) -> bool {
    key != VCAP_SERVICES
        && key.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `KEY=value` lines, sorted by key, each value quoted for POSIX shells.
pub fn env_lines(data: &BTreeMap<String, Vec<u8>>) -> Result<String, String> {
    let mut out = String::new();
    for (key, value) in data.iter().filter(|(key, _)| is_env_key(key)) {
        let value =
            std::str::from_utf8(value).map_err(|_| format!("The Secret's {key} is not UTF-8 text."))?;
        out.push_str(&format!("{key}={}\n", shell_quote(value)));
    }
    Ok(out)
}

/// `value` as one POSIX shell word: bare when it holds only characters no shell treats specially, else
/// single-quoted (a `'` inside becomes `'\''`).
pub fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Columns aligned the way kubectl aligns them: upper-case headers, each column as wide as its widest
/// cell, three spaces between columns, no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
            line.push_str(&" ".repeat(pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A duration the way kubectl's AGE column shows it: `45s`, `3m20s`, `15m`, `2h5m`, `20h`, `3d4h`, `90d`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h, day) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            rest => format!("{m}m{rest}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            rest => format!("{h}h{rest}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if day < 8 => match h % 24 {
            0 => format!("{day}d"),
            rest => format!("{day}d{rest}h"),
        },
        _ => format!("{day}d"),
    }
}

/// An object that is not Ready, as `status` lists it.
#[derive(serde::Serialize, Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

/// Why the object (its JSON, as listed) is not Ready, or `None` when it is. An object the controller has
/// not reported on yet is not Ready either (`Pending`). `only_with_conditions`: objects without conditions
/// count as fine (BucketClass, which the controller may never give any).
pub fn not_ready(kind: &str, object: &Value, only_with_conditions: bool) -> Option<NotReady> {
    let conditions = object.pointer("/status/conditions").and_then(Value::as_array);
    if only_with_conditions && conditions.is_none_or(|c| c.is_empty()) {
        return None;
    }
    let ready =
        conditions.and_then(|c| c.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")));
    let text =
        |key: &str| ready.and_then(|c| c.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned();
    if text("status") == "True" {
        return None;
    }
    let (reason, message) = match ready {
        Some(_) => (text("reason"), text("message")),
        None => (
            "Pending".to_owned(),
            "The controller has not reported on it yet: check that bucket-broker is running.".to_owned(),
        ),
    };
    Some(NotReady {
        namespace: object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned),
        kind: kind.to_owned(),
        name: object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
        reason,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding_data() -> BTreeMap<String, Vec<u8>> {
        let credentials = crate::desired::secret::Credentials {
            grant: crate::desired::secret::Grant::Key { id: "AKIAEXAMPLE", secret: "it's/a+secret" },
            region: "eu-west-2",
            bucket_name: "bucket-broker-uid",
            deploy_env: "dev",
            endpoint_url: None,
        };
        crate::desired::secret::binding_data("assets", &credentials)
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect()
    }

    #[test]
    fn vcap_is_the_secrets_document_and_json_its_credentials() {
        let data = binding_data();
        let vcap: Value =
            serde_json::from_str(&credentials(&data, Format::Vcap, false).expect("as expected"))
                .expect("as expected");
        let stored: Value = serde_json::from_slice(&data[VCAP_SERVICES]).expect("as expected");
        assert_eq!(vcap, stored);
        let json: Value =
            serde_json::from_str(&credentials(&data, Format::Json, false).expect("as expected"))
                .expect("as expected");
        assert_eq!(json, stored[LABEL][0]["credentials"]);
        assert_eq!(json["aws_access_key_id"], "AKIAEXAMPLE");
    }

    #[test]
    fn a_service_key_has_json_and_env_but_no_vcap() {
        let mut data = binding_data();
        data.remove(VCAP_SERVICES);
        data.insert(SERVICE_KEY_JSON.to_owned(), br#"{"aws_access_key_id":"AKIAEXAMPLE"}"#.to_vec());
        let err = credentials(&data, Format::Vcap, true).expect_err("an error");
        assert!(err.contains("--format json"), "{err}");
        let json: Value = serde_json::from_str(&credentials(&data, Format::Json, true).expect("as expected"))
            .expect("as expected");
        assert_eq!(json, json!({"aws_access_key_id": "AKIAEXAMPLE"}));
    }

    #[test]
    fn env_lines_are_the_upper_case_keys_shell_quoted() {
        let lines = credentials(&binding_data(), Format::Env, false).expect("as expected");
        assert_eq!(
            lines,
            "AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_DEFAULT_REGION=eu-west-2\nAWS_REGION=eu-west-2\n\
             AWS_SECRET_ACCESS_KEY='it'\\''s/a+secret'\nBUCKET_NAME=bucket-broker-uid\n"
        );
    }

    #[test]
    fn shell_quoting_survives_every_special_character() {
        assert_eq!(shell_quote("abc/+=.-_"), "abc/+=.-_");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b$c`d\"e"), "'a b$c`d\"e'");
        assert_eq!(shell_quote("don't"), r"'don'\''t'");
    }

    #[test]
    fn broken_json_errors_never_quote_the_value() {
        let data = BTreeMap::from([(VCAP_SERVICES.to_owned(), b"{\"secret-value".to_vec())]);
        let err = credentials(&data, Format::Vcap, false).expect_err("an error");
        assert!(!err.contains("secret-value"), "{err}");
    }

    #[test]
    fn tables_align_like_kubectl() {
        let rows = vec![
            vec!["BucketBinding".to_owned(), "app".to_owned(), "".to_owned()],
            vec!["BucketServiceKey".to_owned(), "laptop-key".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            table(&["kind", "name", "reason"], &rows),
            "KIND               NAME         REASON\n\
             BucketBinding      app\n\
             BucketServiceKey   laptop-key   x\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (45, "45s"),
            (200, "3m20s"),
            (600, "10m"),
            (4 * 3600 + 300, "4h5m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (90 * 86_400, "90d"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(age(Duration::from_secs(seconds)), shown);
        }
    }

    #[test]
    fn not_ready_reads_the_ready_condition() {
        let conflict = json!({"metadata": {"name": "app", "namespace": "shop"}, "status": {"conditions": [
            {"type": "NetworkRestricted", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "SecretConflict", "message": "taken"}]}});
        assert_eq!(
            not_ready("BucketBinding", &conflict, false),
            Some(NotReady {
                namespace: Some("shop".to_owned()),
                kind: "BucketBinding".to_owned(),
                name: "app".to_owned(),
                reason: "SecretConflict".to_owned(),
                message: "taken".to_owned(),
            })
        );
        let ready = json!({"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(not_ready("Bucket", &ready, false), None);
        let fresh = json!({"metadata": {"name": "new"}});
        assert_eq!(not_ready("Bucket", &fresh, false).map(|r| r.reason), Some("Pending".to_owned()));
        assert_eq!(not_ready("BucketClass", &fresh, true), None, "a class without conditions is fine");
    }
}
