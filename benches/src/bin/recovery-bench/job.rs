//! The `pipeline` binary as a process of this benchmark: started with the stack's
//! prefix (snapshots on or off), killed with SIGKILL, timed from spawn to "ready and
//! every input offset committed", its RSS read from `/proc`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::stack::{Stack, bin_dir};
use eventbus::config::CLIENT_CONFIG_ENV;
use pipeline::server::StatusJson;

/// One running `pipeline` process.
pub(crate) struct Job {
    child: Child,
    /// Its REST base URL.
    pub(crate) url: String,
    /// Its log.
    pub(crate) log: PathBuf,
}

/// How the job is started.
pub(crate) struct JobSpec {
    pub(crate) workers: u64,
    pub(crate) snapshots: bool,
    pub(crate) interval_ms: u64,
}

impl Job {
    /// Starts the job on `stack`'s topics; `name` names its log.
    pub(crate) fn start(stack: &Stack, spec: &JobSpec, name: &str) -> anyhow::Result<Job> {
        let free = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (http, grpc) = (free()?, free()?);
        let p = &stack.prefix;
        let log = stack.log(name);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(&log)?;
        let bin = bin_dir().join("pipeline");
        let mut command = Command::new(&bin);
        command
            .args(["-w", &spec.workers.to_string()])
            .env("PIPELINE__TOPICS__PREFIX", p)
            .env(
                "PIPELINE__SINK__TRANSACTIONAL_ID",
                format!("{p}inventory-service-sink"),
            )
            .env("PIPELINE__SERVER__HTTP", format!("127.0.0.1:{http}"))
            .env("PIPELINE__SERVER__GRPC", format!("127.0.0.1:{grpc}"))
            .env("PIPELINE__SNAPSHOT__ENABLED", spec.snapshots.to_string())
            .env(
                "PIPELINE__SNAPSHOT__INTERVAL_MS",
                spec.interval_ms.to_string(),
            )
            .env("KAFKA_BOOTSTRAP", &stack.kafka.bootstrap);
        if let Some(file) = &stack.kafka.client_config_file {
            command.env(CLIENT_CONFIG_ENV, file);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with this binary's profile)",
                    bin.display()
                )
            })?;
        Ok(Job {
            child,
            url: format!("http://127.0.0.1:{http}"),
            log,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps the process.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the job is ready and has committed every offset of `ends` (input
    /// topic, partition → end offset); returns the time since `since`.
    pub(crate) async fn wait_caught_up(
        &mut self,
        ends: &BTreeMap<(String, i32), i64>,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(response) = http
                .get(format!("{}/v1/status", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && let Ok(status) = response.json::<StatusJson>().await
            {
                let behind = status.behind(ends);
                if behind == 0 && status.ready {
                    return Ok(since.elapsed());
                }
                last = format!("{behind} offsets behind");
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the pipeline exited with {status}: see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the pipeline did not catch up in {timeout:?} ({last}): see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The job's metrics, summed per name.
    pub(crate) async fn metrics(&self) -> std::collections::HashMap<String, f64> {
        benches::metrics::scrape(&reqwest::Client::new(), &self.url).await
    }

    /// `GET /v1/inventory`'s items (with their versions).
    pub(crate) async fn inventory(&self) -> anyhow::Result<serde_json::Value> {
        let body: serde_json::Value = reqwest::get(format!("{}/v1/inventory", self.url))
            .await?
            .json()
            .await?;
        Ok(body["items"].clone())
    }
}

/// Resident and peak resident set size of a process, in MiB (`VmRSS`, `VmHWM`).
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
