//! A service's Prometheus metrics as numbers, for benchmarks that watch a process they
//! started (input lag, commit times) while it runs.
//!
//! Why summed by name: the benchmarks ask "how far behind is the job" or "how many
//! transactions", not per partition or per label; summing the series of one metric
//! name gives that answer without a Prometheus server in the loop.

use std::collections::HashMap;

/// Each metric of a Prometheus text exposition, summed over its labels
/// (`name{…} value` lines; comments and unparsable lines skipped); and each under
/// `name{label="value"}` for each of its labels but `le`, summed over the others, for
/// a figure of one label value (one step of a transaction).
pub fn sums(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (base, labels) = name.split_once('{').unwrap_or((name, ""));
        for label in labels.trim_end_matches('}').split(',') {
            if !label.is_empty() && !label.starts_with("le=") {
                *out.entry(format!("{base}{{{label}}}")).or_default() += value;
            }
        }
        *out.entry(base.to_owned()).or_default() += value;
    }
    out
}

/// [`sums`] of `<base_url>/metrics`; empty when the service does not answer.
pub async fn scrape(http: &reqwest::Client, base_url: &str) -> HashMap<String, f64> {
    let text = match http.get(format!("{base_url}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    sums(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_per_metric_name() {
        let text = "# HELP pipeline_input_lag lag\n# TYPE pipeline_input_lag gauge\n\
            pipeline_input_lag{topic=\"a\",partition=\"0\"} 3\n\
            pipeline_input_lag{topic=\"a\",partition=\"1\"} 4.5\n\
            pipeline_sink_commit_seconds_count 10\n\
            broken line\n";
        let m = sums(text);
        assert_eq!(m.get("pipeline_input_lag"), Some(&7.5));
        assert_eq!(m.get("pipeline_sink_commit_seconds_count"), Some(&10.0));
        assert_eq!(m.get("pipeline_input_lag{partition=\"1\"}"), Some(&4.5));
        assert_eq!(m.get("pipeline_input_lag{topic=\"a\"}"), Some(&7.5));
        assert_eq!(m.len(), 5);
        let steps =
            "s_bucket{step=\"commit\",le=\"0.1\"} 2\ns_sum{producer=\"p\",step=\"commit\"} 0.5\n";
        let m = sums(steps);
        assert_eq!(m.get("s_sum{step=\"commit\"}"), Some(&0.5));
        assert_eq!(m.get("s_bucket{step=\"commit\"}"), Some(&2.0));
        assert!(!m.keys().any(|k| k.contains("le=")), "{m:?}");
        assert!(sums("").is_empty());
    }
}
