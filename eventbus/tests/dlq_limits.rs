//! The DLQ size contract holds in deploy/topics.toml: every dead-letter topic accepts
//! records of [`dlq::MAX_RECORD_BYTES`], and no other topic accepts records larger than
//! [`dlq::MAX_INPUT_RECORD_BYTES`], the input size that bound is computed from. Otherwise
//! a record as large as its topic allows could not be dead-lettered byte for byte, and
//! the transaction carrying its dead letter would fail on every attempt (the pipeline
//! stopped on one; benches' tests/garbage.rs). Offline: no cluster needed.

use std::path::PathBuf;

use eventbus::admin::TopicList;
use eventbus::dlq;

/// What is wrong with `topics`' record size limits, one line per topic.
fn size_problems(topics: &TopicList) -> Vec<String> {
    let mut problems = Vec::new();
    for t in &topics.topics {
        let limit = match t.config.get("max.message.bytes") {
            None => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(format!("{}: max.message.bytes {v:?}: {e}", t.name));
                    continue;
                }
            },
        };
        if t.name.ends_with(".dlq") {
            if limit.is_none_or(|n| n < dlq::MAX_RECORD_BYTES) {
                problems.push(format!(
                    "{}: max.message.bytes {limit:?}, must be at least {}",
                    t.name,
                    dlq::MAX_RECORD_BYTES
                ));
            }
        } else if limit.is_some_and(|n| n > dlq::MAX_INPUT_RECORD_BYTES) {
            problems.push(format!(
                "{}: max.message.bytes {limit:?} is above {}, which the DLQ limit assumes",
                t.name,
                dlq::MAX_INPUT_RECORD_BYTES
            ));
        }
    }
    problems
}

fn topics() -> TopicList {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/topics.toml");
    TopicList::load(&file).expect("deploy/topics.toml")
}

#[test]
fn dlq_topics_accept_the_largest_dead_letter() {
    let topics = topics();
    assert!(
        topics
            .topics
            .iter()
            .filter(|t| t.name.ends_with(".dlq"))
            .count()
            >= 2
    );
    assert_eq!(size_problems(&topics), Vec::<String>::new());
}

#[test]
fn a_dlq_at_the_default_limit_or_a_larger_input_is_refused() {
    let mut topics = topics();
    let dlq = topics
        .topics
        .iter_mut()
        .find(|t| t.name.ends_with(".dlq"))
        .unwrap();
    dlq.config.remove("max.message.bytes");
    let name = dlq.name.clone();
    let problems = size_problems(&topics);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with(&name), "{problems:?}");

    let mut topics = self::topics();
    let input = topics
        .topics
        .iter_mut()
        .find(|t| t.name.ends_with("order.created"))
        .unwrap();
    input
        .config
        .insert("max.message.bytes".into(), "5000000".into());
    let problems = size_problems(&topics);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("order.created"), "{problems:?}");
}
