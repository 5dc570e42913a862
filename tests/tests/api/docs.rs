//! docs/api.md's error table is the one the code renders.

const START: &str = "<!-- error-table:start -->\n";
const END: &str = "<!-- error-table:end -->";

#[test]
fn the_error_table_in_docs_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    let docs = std::fs::read_to_string(path).expect("docs/api.md exists");
    let start = docs
        .find(START)
        .expect("docs/api.md has the table start marker")
        + START.len();
    let end = docs
        .find(END)
        .expect("docs/api.md has the table end marker");
    let table = miniauth_http::error_table_markdown();
    if std::env::var_os("MINIAUTH_UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &docs[..start], &docs[end..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    assert_eq!(
        &docs[start..end],
        table,
        "docs/api.md's error table is stale: rerun with MINIAUTH_UPDATE_DOCS=1"
    );
}
