//! `busctl`: the operator's tool for the local platform and any cluster like it.
//!
//! `busctl wait` polls until the cluster is ready, `busctl topics apply` brings topics in
//! line with `deploy/topics.toml`, `busctl topics delete-scratch` removes what killed test
//! stacks left, `busctl status` prints brokers, under-replicated
//! partitions and registry health. `make up`, `make status` and CI call it.
//! `busctl acls check` validates `deploy/acls.toml`, `busctl acls render` prints its
//! bindings for `deploy/local/AclSync.java` (`make acls`); `busctl strimzi render` prints
//! the Strimzi `KafkaTopic`s and `KafkaUser`s made from both files (`deploy/strimzi/`).
//! None of these three talks to Kafka.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventbus::admin::{Admin, Change, Health, TopicList, scratch_topics, wait_ready};

#[derive(Parser)]
#[command(
    name = "busctl",
    about = "Operate the order pipeline's Kafka cluster and registry"
)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
    )]
    bootstrap: String,
    /// librdkafka client config file with the security settings and credentials
    /// (`make up` writes `.run/secrets/admin.conf`); its bootstrap wins.
    #[arg(long, env = eventbus::config::CLIENT_CONFIG_ENV)]
    client_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Wait until N brokers answer and no partition is under-replicated or offline.
    Wait {
        /// Brokers expected.
        #[arg(long, default_value_t = 3)]
        brokers: usize,
        /// Seconds before giving up.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Topic list operations.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Event schema operations.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
        /// Registry base URL.
        #[arg(long, env = "REGISTRY_URL", default_value = "http://127.0.0.1:8081")]
        registry: String,
    },
    /// ACLs as data (`deploy/acls.toml`): validate, or render for AclSync.java.
    Acls {
        #[command(subcommand)]
        command: AclsCommand,
    },
    /// Strimzi resources from the topic and ACL files (`deploy/strimzi/`).
    Strimzi {
        #[command(subcommand)]
        command: StrimziCommand,
    },
    /// Brokers, topics, under-replicated partitions and registry health.
    Status {
        /// Registry base URL.
        #[arg(long, env = "REGISTRY_URL", default_value = "http://127.0.0.1:8081")]
        registry: String,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create missing topics, grow partitions, align configs (idempotent).
    Apply {
        /// The topic list.
        #[arg(long, default_value = "deploy/topics.toml")]
        file: PathBuf,
    },
    /// List the topics of scratch stacks (`stack-<id>-…`) that killed tests or benchmarks
    /// left behind, and delete them with `--yes`. Every partition adds to the brokers' CPU
    /// per fetch; run it only while no test or benchmark is running.
    DeleteScratch {
        /// Delete them (without it, only list them).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum AclsCommand {
    /// Validate the ACL file (unknown operations, resource or pattern types are errors).
    Check {
        /// The ACL file.
        #[arg(long, default_value = "deploy/acls.toml")]
        file: PathBuf,
    },
    /// Print every binding, one per line:
    /// `<principal> <resource type> <pattern type> <operation> <name>` (Kafka's names).
    Render {
        /// The ACL file.
        #[arg(long, default_value = "deploy/acls.toml")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum StrimziCommand {
    /// Print a JSON `List` of KafkaTopics and KafkaUsers (SCRAM-SHA-512, simple ACLs).
    Render {
        /// The `Kafka` resource's name (the `strimzi.io/cluster` label).
        #[arg(long, default_value = eventbus::strimzi::DEFAULT_CLUSTER)]
        cluster: String,
        /// The namespace of the resources.
        #[arg(long, default_value = eventbus::strimzi::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The topic list.
        #[arg(long, default_value = "deploy/topics.toml")]
        topics: PathBuf,
        /// The ACL file.
        #[arg(long, default_value = "deploy/acls.toml")]
        acls: PathBuf,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Register every version of every event schema under `<topic>-value` (idempotent).
    Register,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // ACL files are data: no cluster, no client config needed.
    if let Command::Acls { command } = &cli.command {
        return acls(command);
    }
    if let Command::Strimzi {
        command:
            StrimziCommand::Render {
                cluster,
                namespace,
                topics,
                acls,
            },
    } = &cli.command
    {
        let target = eventbus::strimzi::Target {
            cluster: cluster.clone(),
            namespace: namespace.clone(),
        };
        let text = eventbus::strimzi::render(
            &TopicList::load(topics)?,
            &eventbus::acl::AclFile::load(acls)?,
            &target,
        );
        use std::io::Write as _;
        return match std::io::stdout().lock().write_all(text.as_bytes()) {
            // The reader stopped early (`| head`): not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        };
    }
    let settings = eventbus::KafkaSettings {
        bootstrap: cli.bootstrap.clone(),
        client_id: "busctl".to_owned(),
        client_config_file: cli.client_config.clone(),
        statistics_interval_ms: 0,
        ..Default::default()
    };
    let admin = Admin::new(&settings)?;
    match cli.command {
        Command::Wait { brokers, timeout } => {
            let h = tokio::task::block_in_place(|| {
                wait_ready(&admin, brokers, Duration::from_secs(timeout), |state| {
                    eprintln!("  waiting: {state}")
                })
            })?;
            eprintln!("  ready: {}", h.summary());
        }
        Command::Topics {
            command: TopicsCommand::Apply { file },
        } => {
            let list = TopicList::load(&file)?;
            let changes = admin
                .apply(&list)
                .await
                .context("applying the topic list")?;
            let n = changes
                .iter()
                .filter(|c| !matches!(c, Change::Unchanged(_)))
                .count();
            for c in &changes {
                eprintln!("  {c}");
            }
            eprintln!("  {} topic(s) declared, {n} changed", list.topics.len());
        }
        Command::Topics {
            command: TopicsCommand::DeleteScratch { yes },
        } => {
            let meta = tokio::task::block_in_place(|| admin.metadata(Duration::from_secs(10)))?;
            let scratch = scratch_topics(&meta);
            let partitions: usize = scratch.iter().map(|(_, n)| n).sum();
            for (name, n) in &scratch {
                eprintln!("  {name} ({n} partitions)");
            }
            if scratch.is_empty() || !yes {
                eprintln!(
                    "  {} scratch topic(s), {partitions} partition(s){}",
                    scratch.len(),
                    if scratch.is_empty() {
                        ""
                    } else {
                        "; --yes deletes them"
                    }
                );
            } else {
                let names: Vec<&str> = scratch.iter().map(|(n, _)| n.as_str()).collect();
                admin
                    .delete_topics(&names)
                    .await
                    .context("deleting the scratch topics")?;
                eprintln!(
                    "  deleted {} scratch topic(s), {partitions} partition(s)",
                    names.len()
                );
            }
        }
        Command::Schemas {
            command: SchemasCommand::Register,
            registry,
        } => {
            let config = eventbus::RegistryConfig {
                url: registry,
                ..eventbus::RegistryConfig::from_env()
            };
            let client = eventbus::RegistryClient::new(&config)?;
            let done = eventbus::registry::register_all(&client)
                .await
                .context("registering the event schemas")?;
            for r in &done {
                eprintln!(
                    "  {} {} v{} (id {})",
                    if r.created {
                        "registered"
                    } else {
                        "present   "
                    },
                    r.subject,
                    r.file_version,
                    r.id
                );
            }
            eprintln!(
                "  {} schema version(s), {} new",
                done.len(),
                done.iter().filter(|r| r.created).count()
            );
        }
        Command::Acls { .. } | Command::Strimzi { .. } => {
            unreachable!("handled before connecting")
        }
        Command::Status { registry } => {
            let meta = tokio::task::block_in_place(|| admin.metadata(Duration::from_secs(5)))?;
            let h = Health::from_metadata(&meta);
            println!(
                "  brokers: {}",
                h.brokers
                    .iter()
                    .map(|(id, a)| format!("{id}@{a}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
            println!("  topics: {}, partitions: {}", h.topics, h.partitions);
            let scratch: usize = scratch_topics(&meta).iter().map(|(_, n)| n).sum();
            if scratch > 0 {
                println!(
                    "  scratch partitions (test stacks): {scratch}; when no test runs, \
                     `busctl topics delete-scratch --yes` removes them"
                );
            }
            println!(
                "  under-replicated partitions: {}{}",
                h.under_replicated.len(),
                list_some(&h.under_replicated)
            );
            println!(
                "  offline partitions: {}{}",
                h.offline.len(),
                list_some(&h.offline)
            );
            let url = format!(
                "{}/apis/ccompat/v7/subjects",
                registry.trim_end_matches('/')
            );
            match reqwest::get(&url).await.and_then(|r| r.error_for_status()) {
                Ok(r) => {
                    let subjects: Vec<String> = r.json().await.unwrap_or_default();
                    println!("  registry subjects: {}", subjects.len());
                }
                Err(e) => println!("  registry: unreachable ({e})"),
            }
        }
    }
    Ok(())
}

/// `busctl acls check|render`.
fn acls(command: &AclsCommand) -> anyhow::Result<()> {
    let (AclsCommand::Check { file } | AclsCommand::Render { file }) = command;
    let acls = eventbus::acl::AclFile::load(file)?;
    let bindings = acls.bindings();
    match command {
        AclsCommand::Check { .. } => eprintln!(
            "  {}: {} user(s), {} ACL binding(s), valid",
            file.display(),
            acls.users.len(),
            bindings.len()
        ),
        AclsCommand::Render { .. } => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for b in &bindings {
                match writeln!(out, "{b}") {
                    Ok(()) => {}
                    // The reader stopped early (`| head`): not an error of ours.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

fn list_some(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(
            " ({}{})",
            items
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if items.len() > 10 { ", ..." } else { "" }
        )
    }
}
