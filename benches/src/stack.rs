//! The three services as real processes on the real cluster, isolated by a name prefix.
//!
//! [`Stack::start`] creates every topic of `deploy/topics.toml` under a unique prefix,
//! registers every schema under the prefixed subjects, picks free local ports, and starts
//! `pipeline`, `payment` and `ingress` from the workspace's target folder with their
//! layered configuration overridden through the environment (`PIPELINE__...`,
//! `PAYMENT__...`, `INGRESS__...`), exactly as an operator would. Each process logs to
//! `target/stack-logs/<prefix>/<name>.log`; all are killed when the stack is dropped.
//!
//! Every service connects with the client config of [`crate::cluster`]
//! (`KAFKA_CLIENT_CONFIG`, by default the `admin` principal's `.run/secrets/admin.conf`),
//! so the stack runs on the secure local cluster: the services' own principals only have
//! ACLs on the unprefixed topics and groups, not on a stack's prefixed ones.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventbus::admin::{Admin, TopicList};
use eventbus::config::CLIENT_CONFIG_ENV;
use eventbus::{KafkaSettings, RegistryClient, RegistryConfig};
use pipeline::config::{TopicConfig, TopicNames};

use crate::client::Endpoints;
use crate::scenario::GatewayRules;

/// A running set of services.
pub struct Stack {
    /// The name prefix of topics, subjects, groups and transactional ids.
    pub prefix: String,
    /// Where the services listen.
    pub endpoints: Endpoints,
    /// Payment's health/metrics base URL.
    pub payment_url: String,
    /// The Kafka settings the services use.
    pub kafka: KafkaSettings,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    rules: GatewayRules,
    children: BTreeMap<&'static str, Child>,
    /// How each service was started, to start it again.
    specs: BTreeMap<&'static str, Spec>,
    topics: Vec<String>,
    /// Every pipeline process's `/metrics` base URL, process 0 (the API) first.
    pub pipeline_metrics: Vec<String>,
}

/// The names of the pipeline job's processes ([`Stack::start_pipeline_job`]): process 0,
/// which serves the API, is `pipeline` as in a one-process stack.
const PIPELINE_PROCESSES: [&str; 4] = ["pipeline", "pipeline-1", "pipeline-2", "pipeline-3"];

/// How a service was started: its extra environment and its arguments.
type Spec = (Vec<(String, String)>, Vec<String>);

/// What [`Stack::start_with`] changes from [`Stack::start`].
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Only these services (`"pipeline"`, `"payment"`, `"ingress"`); all three when
    /// empty. A benchmark of one service leaves the others out so that they neither
    /// consume its records nor share its CPU.
    pub only: Vec<&'static str>,
    /// Extra environment of the pipeline (`PIPELINE__...` settings).
    pub pipeline_env: Vec<(&'static str, String)>,
}

/// The workspace's root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The folder of the service binaries built with this test or bench (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Stack {
    /// The pipeline's topic names under this stack's prefix, and the registry id of each
    /// input's value schema (inputs first, in the job's order; registered if new): what
    /// a bench needs to write framed records straight onto the job's inputs.
    pub async fn pipeline_inputs(&self) -> anyhow::Result<(TopicNames, [u32; 5])> {
        let names = TopicConfig {
            prefix: self.prefix.clone(),
        }
        .names();
        let registry = RegistryClient::new(&RegistryConfig::from_env())?;
        let mut ids = [0u32; 5];
        for (id, (topic, text)) in ids.iter_mut().zip(names.with_subjects()) {
            let text = text.with_context(|| format!("{topic} has no schema"))?;
            *id = registry.id_for(&format!("{topic}-value"), text).await?;
        }
        Ok((names, ids))
    }

    /// Creates the prefixed topics and subjects and starts pipeline, payment and ingress;
    /// returns once all three answer `/readyz`. `pipeline_args` are timely's (`-w 2`).
    pub async fn start(rules: GatewayRules, pipeline_args: &[&str]) -> anyhow::Result<Stack> {
        Stack::start_with(rules, pipeline_args, &StackOptions::default()).await
    }

    /// [`Stack::start`] with [`StackOptions`]: only some of the services, extra settings.
    /// Every topic and subject is created either way.
    pub async fn start_with(
        rules: GatewayRules,
        pipeline_args: &[&str],
        options: &StackOptions,
    ) -> anyhow::Result<Stack> {
        let prefix = format!(
            "{}{}-",
            eventbus::admin::SCRATCH_PREFIX,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let kafka = crate::cluster::kafka_settings();
        let registry = RegistryClient::new(&RegistryConfig::from_env())?;

        let mut list = TopicList::load(&workspace_root().join("deploy/topics.toml"))?;
        for t in &mut list.topics {
            t.name = format!("{prefix}{}", t.name);
        }
        let topics = list.topics.iter().map(|t| t.name.clone()).collect();
        Admin::new(&kafka)?
            .apply(&list)
            .await
            .context("creating the stack's topics")?;
        for s in schemas::registry_subjects() {
            registry
                .register_history(&format!("{prefix}{}", s.subject), &s.versions)
                .await
                .with_context(|| format!("registering {prefix}{}", s.subject))?;
        }

        let (rest, grpc, views_http, views_grpc, payment_http) = (
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
        );
        let bin_dir = bin_dir();
        let log_dir = workspace_root()
            .join("target/stack-logs")
            .join(prefix.trim_end_matches('-'));
        std::fs::create_dir_all(&log_dir)?;
        let mut stack = Stack {
            endpoints: Endpoints {
                ingress_rest: format!("http://127.0.0.1:{rest}"),
                ingress_grpc: format!("http://127.0.0.1:{grpc}"),
                views_rest: format!("http://127.0.0.1:{views_http}"),
                views_grpc: format!("http://127.0.0.1:{views_grpc}"),
            },
            payment_url: format!("http://127.0.0.1:{payment_http}"),
            prefix,
            kafka,
            bin_dir,
            log_dir,
            rules,
            children: BTreeMap::new(),
            specs: BTreeMap::new(),
            topics,
            pipeline_metrics: vec![format!("http://127.0.0.1:{views_http}")],
        };
        let p = stack.prefix.clone();
        let runs = |name: &str| options.only.is_empty() || options.only.contains(&name);
        if runs("pipeline") {
            let mut env = stack.pipeline_env();
            env.extend(options.pipeline_env.iter().map(|(k, v)| (*k, v.clone())));
            stack.spawn("pipeline", &env, pipeline_args)?;
        }
        if runs("payment") {
            stack.start_payment()?;
        }
        if runs("ingress") {
            stack.spawn(
                "ingress",
                &[
                    ("INGRESS__REST__LISTEN", format!("127.0.0.1:{rest}")),
                    ("INGRESS__GRPC__LISTEN", format!("127.0.0.1:{grpc}")),
                    (
                        "INGRESS__VIEWS__ENDPOINT",
                        format!("http://127.0.0.1:{views_grpc}"),
                    ),
                    (
                        "INGRESS__TOPICS__ORDER_CREATED",
                        format!("{p}order-service.order.created"),
                    ),
                    (
                        "INGRESS__TOPICS__ORDER_UPDATED",
                        format!("{p}order-service.order.updated"),
                    ),
                    (
                        "INGRESS__TOPICS__STOCK_ADJUSTED",
                        format!("{p}inventory-service.stock.adjusted"),
                    ),
                ],
                &[],
            )?;
        }
        for (name, url) in [
            ("pipeline", format!("{}/readyz", stack.endpoints.views_rest)),
            ("payment", format!("{}/readyz", stack.payment_url)),
            (
                "ingress",
                format!("{}/readyz", stack.endpoints.ingress_rest),
            ),
        ] {
            if stack.children.contains_key(name) {
                stack
                    .wait_ready(name, &url, Duration::from_secs(120))
                    .await?;
            }
        }
        Ok(stack)
    }

    /// The pipeline's settings in this stack: its topics, transactional id, API ports.
    fn pipeline_env(&self) -> Vec<(&'static str, String)> {
        let p = &self.prefix;
        let address = |url: &str| url.trim_start_matches("http://").to_owned();
        vec![
            ("PIPELINE__TOPICS__PREFIX", p.clone()),
            (
                "PIPELINE__SINK__TRANSACTIONAL_ID",
                format!("{p}inventory-service-sink"),
            ),
            (
                "PIPELINE__SERVER__HTTP",
                address(&self.endpoints.views_rest),
            ),
            (
                "PIPELINE__SERVER__GRPC",
                address(&self.endpoints.views_grpc),
            ),
        ]
    }

    /// The services whose process ended since it was started, and how (`kill -9` shows
    /// as a signal, a failure as an exit status); they stay in the stack until
    /// restarted or stopped.
    pub fn ended(&mut self) -> Vec<(&'static str, std::process::ExitStatus)> {
        self.children
            .iter_mut()
            .filter_map(|(&name, child)| Some((name, child.try_wait().ok()??)))
            .collect()
    }

    /// Starts the pipeline job as `processes` processes of `workers` workers each
    /// (timely's `-w W -n N -p I -h HOSTFILE`, the hostfile on free local ports in the
    /// stack's log folder), named `pipeline` (process 0: the sink and the API) and
    /// `pipeline-1`, `pipeline-2`, ... (each with its own `/metrics` on a free port,
    /// see [`Stack::pipeline_metrics`]); returns once process 0 is ready. For a stack
    /// started without the pipeline (`StackOptions::only`). At most four processes.
    pub async fn start_pipeline_job(
        &mut self,
        processes: usize,
        workers: usize,
    ) -> anyhow::Result<()> {
        if !(1..=PIPELINE_PROCESSES.len()).contains(&processes) {
            bail!(
                "1 to {} pipeline processes, not {processes}",
                PIPELINE_PROCESSES.len()
            );
        }
        let hostfile = self.log_dir.join("pipeline-hosts.txt");
        let mut hosts = String::new();
        for _ in 0..processes {
            hosts.push_str(&format!("127.0.0.1:{}\n", free_port()?));
        }
        std::fs::write(&hostfile, hosts)?;
        let (n, w, file) = (
            processes.to_string(),
            workers.to_string(),
            hostfile.display().to_string(),
        );
        self.pipeline_metrics = vec![self.endpoints.views_rest.clone()];
        for (index, &name) in PIPELINE_PROCESSES.iter().take(processes).enumerate() {
            let mut env = self.pipeline_env();
            if index > 0 {
                let metrics = format!("127.0.0.1:{}", free_port()?);
                self.pipeline_metrics.push(format!("http://{metrics}"));
                env.push(("PIPELINE__SERVER__METRICS", metrics));
            }
            let p = index.to_string();
            self.spawn(name, &env, &["-w", &w, "-n", &n, "-p", &p, "-h", &file])?;
        }
        self.wait_service_ready("pipeline").await
    }

    /// The running processes of the pipeline job, process 0 first.
    pub fn pipeline_processes(&self) -> Vec<&'static str> {
        PIPELINE_PROCESSES
            .iter()
            .copied()
            .filter(|name| self.children.contains_key(name))
            .collect()
    }

    /// Restarts every process of the pipeline job, as its README prescribes after a lost
    /// process (the job is fail-stop; the restart restores from the progress topic): each
    /// one still running is stopped (SIGTERM, SIGKILL after 30 s), then all are started
    /// as they were and process 0 is waited for. Returns how each process was found:
    /// `running`, or the way it ended (`signal: 9 (SIGKILL)`, `exit status: 1`).
    pub async fn restart_pipeline_job(&mut self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let names = self.pipeline_processes();
        if names.is_empty() {
            bail!("no pipeline process was started in this stack");
        }
        let mut found = Vec::new();
        for &name in &names {
            let state = match self.children.get_mut(name).map(Child::try_wait) {
                Some(Ok(Some(status))) => status.to_string(),
                Some(Ok(None)) => "running".to_owned(),
                Some(Err(e)) => format!("unknown ({e})"),
                None => "not started".to_owned(),
            };
            found.push((name, state));
        }
        for &name in &names {
            self.stop(name)?;
        }
        for &name in &names {
            self.restart(name)?;
        }
        self.wait_service_ready("pipeline").await?;
        Ok(found)
    }

    /// The stack's topics (prefixed names).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The process id of a running service.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name).map(Child::id)
    }

    /// Starts (or restarts) the payment service.
    pub fn start_payment(&mut self) -> anyhow::Result<()> {
        let port = self
            .payment_url
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let declined = format!(
            "[{}]",
            self.rules
                .declined_customers
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        self.spawn(
            "payment",
            &[
                ("PAYMENT__TOPICS__PREFIX", self.prefix.clone()),
                ("PAYMENT__HTTP__LISTEN", format!("127.0.0.1:{port}")),
                ("PAYMENT__GATEWAY__DECLINED_CUSTOMERS", declined),
                (
                    "PAYMENT__GATEWAY__AMOUNT_LIMIT_MINOR",
                    self.rules.amount_limit_minor.to_string(),
                ),
            ],
            &[],
        )
    }

    /// Starts service `name` again as it was started first (after it was killed, say);
    /// a process still running under that name is killed first.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let Some((&name, (env, args))) = self.specs.get_key_value(name) else {
            bail!("{name} was never started in this stack");
        };
        let (env, args) = (env.clone(), args.clone());
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(name, &env, &args)
    }

    /// Waits until service `name` answers `/readyz`.
    pub async fn wait_service_ready(&mut self, name: &str) -> anyhow::Result<()> {
        let url = match name {
            "pipeline" => format!("{}/readyz", self.endpoints.views_rest),
            "payment" => format!("{}/readyz", self.payment_url),
            "ingress" => format!("{}/readyz", self.endpoints.ingress_rest),
            other => bail!("no service {other}"),
        };
        self.wait_ready(name, &url, Duration::from_secs(120)).await
    }

    /// Waits until the payment service is ready again.
    pub async fn wait_payment_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.payment_url);
        self.wait_ready("payment", &url, Duration::from_secs(120))
            .await
    }

    /// Stops a service gracefully (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.children.remove(name) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
        Ok(())
    }

    /// The prefixed name of a project topic.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Where a service's log is.
    pub fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    fn spawn(
        &mut self,
        name: &'static str,
        env: &[(&str, String)],
        args: &[&str],
    ) -> anyhow::Result<()> {
        // `pipeline-1` is a second process of the `pipeline` binary.
        let binary = name.split_once('-').map_or(name, |(binary, _)| binary);
        let bin = self.bin_dir.join(binary);
        if !bin.exists() {
            bail!(
                "{} is missing: build it first (`cargo build -p {binary}`)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))?;
        let mut command = Command::new(&bin);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("KAFKA_BOOTSTRAP", &self.kafka.bootstrap);
        if let Some(file) = &self.kafka.client_config_file {
            command.env(CLIENT_CONFIG_ENV, file);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.children.insert(name, child);
        self.specs.insert(
            name,
            (
                env.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                args.iter().map(|a| (*a).to_owned()).collect(),
            ),
        );
        Ok(())
    }

    async fn wait_ready(&mut self, name: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.children.get_mut(name)
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{name} exited with {status}: see {}",
                    self.log(name).display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready after {timeout:?}: see {}",
                    self.log(name).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every service and deletes the stack's topics and registry subjects.
    pub async fn shutdown(mut self) {
        for name in ["ingress", "payment", "pipeline"] {
            let _ = self.stop(name);
        }
        for name in self.pipeline_processes() {
            let _ = self.stop(name);
        }
        if let Ok(admin) = Admin::new(&self.kafka) {
            let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            let _ = admin.delete_topics(&names).await;
        }
        if let Ok(registry) = RegistryClient::new(&RegistryConfig::from_env()) {
            for s in schemas::registry_subjects() {
                let _ = registry
                    .delete_subject(&format!("{}{}", self.prefix, s.subject), true)
                    .await;
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
