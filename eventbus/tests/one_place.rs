//! eventbus is the only crate that builds Kafka clients: no other workspace crate
//! depends on `rdkafka`, and no source file outside `eventbus/` names rdkafka or builds a
//! client configuration. (The grep-able form: `grep -rn 'rdkafka' --include=*.rs
//! --include=Cargo.toml ingress payment pipeline benches servicekit schemas` is empty.)
//!
//! Needs no cluster.

use std::path::{Path, PathBuf};

/// Words that only code building or configuring librdkafka clients uses. `rdkafka`
/// counts as a whole word only (the crate path or dependency), so prose and log
/// targets may still say "librdkafka".
const FORBIDDEN: &[&str] = &["rdkafka", "ClientConfig", "create_with_context"];

fn names(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// Lines of `text` that name a forbidden word, as `(line number, word)`.
fn findings(text: &str) -> Vec<(usize, &'static str)> {
    text.lines()
        .enumerate()
        .flat_map(|(n, line)| {
            FORBIDDEN
                .iter()
                .filter(move |word| names(line, word))
                .map(move |word| (n + 1, *word))
        })
        .collect()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") || name == "Cargo.toml" {
            out.push(path);
        }
    }
}

/// Every workspace member except eventbus, from the root Cargo.toml.
fn other_members(root: &Path) -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let table: toml::Table = manifest.parse().unwrap();
    let members = table["workspace"]["members"].as_array().unwrap();
    members
        .iter()
        .map(|m| m.as_str().unwrap())
        .filter(|m| *m != "eventbus")
        .map(|m| root.join(m))
        .collect()
}

#[test]
fn no_crate_but_eventbus_builds_a_kafka_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let members = other_members(&root);
    assert!(
        members.len() >= 4,
        "expected the service crates among the workspace members: {members:?}"
    );
    let mut violations = Vec::new();
    for member in members {
        let mut paths = Vec::new();
        files(&member, &mut paths);
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for (line, word) in findings(&text) {
                violations.push(format!("{}:{line}: {word}", path.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "Kafka clients are built only in eventbus (eventbus::client, eventbus::kafka for \
         types); found:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_looks_for() {
    let code = "use eventbus::kafka::Message;\nlet c = rdkafka::ClientConfig::new();\n";
    assert_eq!(findings(code), vec![(2, "rdkafka"), (2, "ClientConfig")]);
    assert_eq!(
        findings("[dependencies]\nrdkafka.workspace = true\n"),
        vec![(2, "rdkafka")]
    );
    assert!(findings("use eventbus::client;\n").is_empty());
    assert!(findings("filter = \"info,librdkafka=warn\" // rust-rdkafka's flush\n").is_empty());
}
