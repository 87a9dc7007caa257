//! One batch: OpenAI's batch object as persisted (`{id}.json`), its input lines, and its
//! journal (`{id}.journal`): one JSON line per answered input line, `{"line", "ok", "record"}`,
//! appended and synced as each finishes, so a restarted server knows which lines are done and
//! never writes one twice (a torn last line is dropped and that line runs again).

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Statuses a runner still has work in.
pub fn is_active(status: &str) -> bool {
    matches!(
        status,
        "validating" | "in_progress" | "finalizing" | "cancelling"
    )
}

pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("batch_")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new batch object (`validating`).
pub fn new_batch(
    input_file_id: &str,
    endpoint: &str,
    window: &str,
    metadata: Value,
    now: u64,
) -> Value {
    json!({
        "id": format!("batch_{:024x}", rand::random::<u128>() >> 32),
        "object": "batch",
        "endpoint": endpoint,
        "errors": null,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "validating",
        "output_file_id": null,
        "error_file_id": null,
        "created_at": now,
        "in_progress_at": null,
        "expires_at": now + 24 * 3600,
        "finalizing_at": null,
        "completed_at": null,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
    })
}

pub fn batch_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

pub fn journal_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.journal"))
}

/// The lines answered so far: line number → (ok, record). A line that does not parse (a write
/// torn by a crash) is dropped.
pub fn read_journal(path: &Path) -> BTreeMap<usize, (bool, Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let line = v["line"].as_u64()? as usize;
            Some((line, (v["ok"].as_bool()?, v["record"].clone())))
        })
        .collect()
}

/// Appends one answered line to the journal and syncs it.
pub fn append_journal(path: &Path, line: usize, ok: bool, record: &Value) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // a torn earlier write leaves a partial line: start on a fresh one
    let entry = json!({"line": line, "ok": ok, "record": record});
    f.write_all(format!("\n{entry}\n").as_bytes())?;
    f.sync_data()
}

/// An input line: its request, or why it cannot run (its `custom_id` where it has one).
pub type Line = Result<Value, (Value, String)>;

/// The input file's requests: each non-empty line with its number, and the error of a line
/// that cannot run (not JSON, no `custom_id`, another `url` or `method`, a repeated
/// `custom_id`, `stream: true`).
pub fn parse_lines(content: &str, endpoint: &str) -> Vec<(usize, Line)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n, parse_line(l, endpoint, n, &mut seen)))
        .collect()
}

fn parse_line(line: &str, endpoint: &str, n: usize, seen: &mut HashMap<String, usize>) -> Line {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| (Value::Null, format!("line {}: not JSON: {e}", n + 1)))?;
    let custom_id = v["custom_id"].clone();
    let fail = |m: String| Err((custom_id.clone(), format!("line {}: {m}", n + 1)));
    let Some(id) = v["custom_id"].as_str() else {
        return fail("custom_id (a string) is required".into());
    };
    if let Some(first) = seen.insert(id.to_string(), n) {
        seen.insert(id.to_string(), first);
        return fail(format!("custom_id {id:?} repeats line {}", first + 1));
    }
    if v["method"] != "POST" {
        return fail(format!("method {} (batches run POST)", v["method"]));
    }
    if v["url"] != endpoint {
        return fail(format!(
            "url {} is not the batch's endpoint {endpoint}",
            v["url"]
        ));
    }
    if !v["body"].is_object() {
        return fail("body (an object) is required".into());
    }
    if v["body"]["stream"] == true {
        return fail("stream: true is not supported in a batch".into());
    }
    Ok(v)
}

/// The record of a line that could not run.
pub fn error_record(custom_id: Value, message: &str) -> Value {
    json!({"id": format!("batch_req_{:024x}", rand::random::<u128>() >> 32), "custom_id": custom_id,
        "response": null, "error": {"code": "invalid_request", "message": message}})
}

/// The record of a line that ran: its HTTP status and body.
pub fn response_record(custom_id: Value, status: u16, body: Value) -> Value {
    let id = format!("batch_req_{:024x}", rand::random::<u128>() >> 32);
    json!({"id": id, "custom_id": custom_id, "error": null,
        "response": {"status_code": status, "request_id": id, "body": body}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_errors_and_the_journal_survives_a_torn_write() {
        let content = concat!(
            r#"{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}"#,
            "\n",
            "not json\n\n",
            r#"{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}"#,
            "\n",
            r#"{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {}}"#,
            "\n",
            r#"{"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"stream": true}}"#,
            "\n",
            r#"{"method": "POST", "url": "/v1/completions", "body": {}}"#,
            "\n",
        );
        let lines = parse_lines(content, "/v1/completions");
        let ok: Vec<bool> = lines.iter().map(|(_, r)| r.is_ok()).collect();
        assert_eq!(ok, [true, false, false, false, false, false]);
        assert_eq!(
            lines.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [0, 1, 3, 4, 5, 6]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        append_journal(&path, 0, true, &json!({"x": 1})).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"line": 3, "ok": tr"#)
            .unwrap();
        append_journal(&path, 4, false, &json!({"y": 2})).unwrap();
        let j = read_journal(&path);
        assert_eq!(j.keys().copied().collect::<Vec<_>>(), [0, 4]);
    }
}
