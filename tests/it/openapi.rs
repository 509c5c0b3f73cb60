//! The OpenAPI spec is a contract with every integration: a change to it must be seen and meant. The spec
//! is compared with `tests/snapshots/openapi.json`; `UPDATE_SNAPSHOTS=1` rewrites the file instead.

use std::path::Path;

#[test]
fn openapi_spec_matches_the_snapshot() {
    let (_, spec) = huiyuan::http::api();
    let actual = spec.to_pretty_json().expect("the spec serializes") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    // A missing snapshot reads as empty; a checkout with CRLF line ends is still the same spec.
    let expected = std::fs::read_to_string(&path).unwrap_or_default().replace("\r\n", "\n");
    if actual == expected {
        return;
    }
    let first = actual.lines().zip(expected.lines()).position(|(a, e)| a != e);
    let at = first.unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
    let line = |text: &str| text.lines().nth(at).unwrap_or("(end of file)").to_string();
    panic!(
        "the OpenAPI spec differs from tests/snapshots/openapi.json from line {}:\n  snapshot: {}\n  now:      {}\n\
         Review the difference; if it is intended, run `UPDATE_SNAPSHOTS=1 cargo test openapi` and commit the \
         snapshot (`git diff tests/snapshots` then shows the whole change).",
        at + 1,
        line(&expected),
        line(&actual),
    );
}
