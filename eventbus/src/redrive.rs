//! The redrive tool: list, inspect and replay dead-letter records.
//!
//! - **list**: one line per DLQ record: partition:offset, original topic, key, error
//!   class, attempts, when it failed last, and the message.
//! - **inspect**: one record in full: every header, the value as hex and, when it
//!   decodes through the registry (by the writer schema id in its wire header), as JSON.
//! - **replay**: sends records back to their original topic (`dlq.original.topic`)
//!   with the original key and value and the original record's own headers (no
//!   `dlq.*`, no earlier `redrive.*`), plus `redrive.from` (`<dlq>/<partition>/<offset>`)
//!   and `redrive.at` (ms). Selection: one record (`--partition P --offset O`), an
//!   offset range (`--from A --to B`, optionally in one partition), or `--all`; each
//!   narrowed by `--class` and `--original-topic`. `--dry-run` only prints.
//!
//! Replaying does not delete anything from the DLQ (Kafka cannot): the DLQ is a log of
//! what failed, and `redrive.from` ties each replayed record to its entry. A replayed
//! record that fails again is dead-lettered again with fresh `dlq.*` headers.
//!
//! The library functions here are what the `dlq` binary calls; `busctl` can mount
//! [`Command`] as a subcommand.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use schemas::SchemaError;

use crate::acl::UnknownSpelling;
use crate::codec::unframe;
use crate::config::KafkaSettings;
use crate::dlq::{self, DeadLetter, ErrorClass};
use crate::error::BusError;
use crate::headers::{HeaderList, now_ms, rfc3339_millis};
use crate::producer::{Delivery, Producer};
use crate::reader::{ReadOptions, read_topic};
use crate::registry::RegistryClient;

/// Header naming the DLQ entry a replayed record came from: `<dlq>/<partition>/<offset>`.
pub const REDRIVE_FROM: &str = "redrive.from";
/// Header with the replay time, ms since the epoch.
pub const REDRIVE_AT: &str = "redrive.at";
/// Prefix of the redrive headers.
pub const REDRIVE_PREFIX: &str = "redrive.";

/// One record of a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    /// The DLQ topic.
    pub dlq_topic: String,
    /// Partition in the DLQ.
    pub partition: i32,
    /// Offset in the DLQ.
    pub offset: i64,
    /// When it was dead-lettered, ms.
    pub timestamp_ms: Option<i64>,
    /// The key (the original key).
    pub key: Option<Vec<u8>>,
    /// The value (the original value, byte for byte).
    pub value: Option<Vec<u8>>,
    /// All headers.
    pub headers: HeaderList,
    /// The `dlq.*` headers read back; `None` if they are missing.
    pub letter: Option<DeadLetter>,
}

impl DlqRecord {
    /// Wraps a record read from a DLQ topic.
    pub fn from_message(m: &OwnedMessage) -> Self {
        let headers = HeaderList::from_headers(m.headers());
        DlqRecord {
            dlq_topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            letter: DeadLetter::from_headers(&headers),
            headers,
        }
    }

    /// The headers a replay sends: the original record's own headers (every `dlq.*`
    /// and earlier `redrive.*` removed) plus `redrive.from` and `redrive.at`.
    pub fn replay_headers(&self, at_ms: i64) -> HeaderList {
        let mut h = self
            .headers
            .without_prefixes(&[dlq::PREFIX, REDRIVE_PREFIX]);
        h.push(
            REDRIVE_FROM,
            format!("{}/{}/{}", self.dlq_topic, self.partition, self.offset),
        );
        h.push(REDRIVE_AT, at_ms.to_string());
        h
    }
}

/// Which DLQ records to act on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this DLQ partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// First DLQ offset (inclusive).
    #[arg(long)]
    pub from: Option<i64>,
    /// Last DLQ offset (inclusive).
    #[arg(long)]
    pub to: Option<i64>,
    /// Only records of this error class (undecodable, unknown-schema, schema-invalid,
    /// handler-fatal, retries-exhausted).
    #[arg(long, value_parser = parse_class)]
    pub class: Option<ErrorClass>,
    /// Only records from this original topic.
    #[arg(long)]
    pub original_topic: Option<String>,
}

fn parse_class(text: &str) -> Result<ErrorClass, UnknownSpelling> {
    ErrorClass::parse(text).ok_or_else(|| UnknownSpelling {
        what: "error class",
        given: text.to_owned(),
        expected: ErrorClass::ALL.map(ErrorClass::as_str).join(", "),
    })
}

impl Filter {
    /// Exactly one record.
    pub fn one(partition: i32, offset: i64) -> Self {
        Filter {
            partition: Some(partition),
            from: Some(offset),
            to: Some(offset),
            ..Filter::default()
        }
    }

    /// Whether `record` passes the class and original-topic conditions (the offset
    /// conditions are applied while reading).
    pub fn matches(&self, record: &DlqRecord) -> bool {
        let letter = record.letter.as_ref();
        self.class
            .is_none_or(|c| letter.is_some_and(|l| l.class == c))
            && self
                .original_topic
                .as_ref()
                .is_none_or(|t| letter.is_some_and(|l| &l.topic == t))
    }

    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            read_committed: false,
            partition: self.partition,
            from_offset: self.from,
            to_offset: self.to,
            timeout: Duration::from_secs(60),
        }
    }
}

/// The DLQ records `filter` selects, by partition then offset.
pub async fn list(
    kafka: &KafkaSettings,
    dlq_topic: &str,
    filter: &Filter,
) -> Result<Vec<DlqRecord>, BusError> {
    let records = read_topic(kafka, dlq_topic, &filter.read_options()).await?;
    Ok(records
        .iter()
        .map(DlqRecord::from_message)
        .filter(|r| filter.matches(r))
        .collect())
}

/// One DLQ record with its value decoded, when possible.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The record.
    pub record: DlqRecord,
    /// The writer schema id from the wire header, if the value is framed.
    pub schema_id: Option<u32>,
    /// The value as JSON, decoded with its writer schema.
    pub json: Option<serde_json::Value>,
    /// Why it could not be decoded.
    pub decode_error: Option<Arc<BusError>>,
}

/// Reads one DLQ record and decodes its value through the registry.
pub async fn inspect(
    kafka: &KafkaSettings,
    registry: &RegistryClient,
    dlq_topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Inspection, BusError> {
    let record = list(kafka, dlq_topic, &Filter::one(partition, offset))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            BusError::Config(format!("no record at {dlq_topic}/{partition}/{offset}"))
        })?;
    let mut inspection = Inspection {
        record,
        schema_id: None,
        json: None,
        decode_error: None,
    };
    match decode_json(registry, inspection.record.value.as_deref()).await {
        Ok((id, json)) => {
            inspection.schema_id = Some(id);
            inspection.json = Some(json);
        }
        Err((id, e)) => {
            inspection.schema_id = id;
            inspection.decode_error = Some(Arc::new(e));
        }
    }
    Ok(inspection)
}

/// The value as JSON, or why not, with the writer schema id when the framing had one.
async fn decode_json(
    registry: &RegistryClient,
    value: Option<&[u8]>,
) -> Result<(u32, serde_json::Value), (Option<u32>, BusError)> {
    let value = value.ok_or_else(|| (None, BusError::Decode("record has no value".into())))?;
    let (id, datum) = unframe(value).map_err(|e| (None, e))?;
    let schema = registry
        .writer_schema(id)
        .await
        .map_err(|e| (Some(id), e))?;
    let avro_error = |e: apache_avro::Error| (Some(id), SchemaError::Avro(Box::new(e)).into());
    let mut reader = datum;
    let avro = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .and_then(|r| r.read_value(&mut reader))
        .map_err(avro_error)?;
    let json = serde_json::Value::try_from(avro).map_err(avro_error)?;
    Ok((id, json))
}

/// What a replay did with one record.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Where it went; `None` on a dry run.
    pub delivery: Option<Delivery>,
    /// The original topic it went to (or would go to).
    pub target: String,
}

/// Replays the records `filter` selects to their original topics; stops at the first
/// failure (the records before it are replayed and listed in the error's context by
/// the log). Records without `dlq.original.topic` are skipped with a warning.
pub async fn replay(
    kafka: &KafkaSettings,
    producer: &Producer,
    dlq_topic: &str,
    filter: &Filter,
    dry_run: bool,
) -> Result<Vec<Replayed>, BusError> {
    let mut done = Vec::new();
    for record in list(kafka, dlq_topic, filter).await? {
        let Some(letter) = &record.letter else {
            tracing::warn!(
                partition = record.partition,
                offset = record.offset,
                "not a dead-letter record (no dlq.original.topic); skipped"
            );
            continue;
        };
        let delivery = if dry_run {
            None
        } else {
            let headers = record.replay_headers(now_ms());
            Some(
                producer
                    .publish_raw(
                        &letter.topic,
                        record.key.as_deref(),
                        record.value.as_deref(),
                        &headers,
                    )
                    .await?,
            )
        };
        done.push(Replayed {
            partition: record.partition,
            offset: record.offset,
            delivery,
            target: letter.topic.clone(),
        });
    }
    Ok(done)
}

/// Connection settings of the CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = crate::config::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    /// librdkafka client config file with security settings and credentials
    /// (`.run/secrets/admin.conf` locally); its bootstrap wins.
    #[arg(long, env = crate::config::CLIENT_CONFIG_ENV)]
    pub client_config: Option<std::path::PathBuf>,
    /// Schema registry URL (root or ccompat base).
    #[arg(long, env = "REGISTRY_URL", default_value = crate::config::DEFAULT_REGISTRY_URL)]
    pub registry: String,
}

/// The redrive subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// List DLQ records: partition:offset, original topic, key, class, attempts, time, message.
    List {
        /// The DLQ topic, e.g. payment-service.dlq.
        dlq: String,
        /// Which records.
        #[command(flatten)]
        filter: Filter,
    },
    /// Show one DLQ record: all headers, value as hex and as JSON when it decodes.
    Inspect {
        /// The DLQ topic.
        dlq: String,
        /// DLQ partition.
        #[arg(long)]
        partition: i32,
        /// DLQ offset.
        #[arg(long)]
        offset: i64,
    },
    /// Replay DLQ records to their original topics (key, value and original headers kept).
    Replay {
        /// The DLQ topic.
        dlq: String,
        /// One record: its DLQ offset (with --partition).
        #[arg(long, requires = "partition", conflicts_with_all = ["from", "to", "all"])]
        offset: Option<i64>,
        /// Every record that passes the other conditions (required when no offset or range is given).
        #[arg(long)]
        all: bool,
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Print what would be replayed, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The `dlq` command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dlq", about = "List, inspect and replay dead-letter records")]
pub struct Cli {
    /// Where the cluster and registry are.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Runs the command, printing to `out`.
    pub async fn run(self, out: &mut (impl Write + Send)) -> Result<(), BusError> {
        let kafka = KafkaSettings {
            bootstrap: self.connection.bootstrap.clone(),
            client_id: "dlq-redrive".to_owned(),
            client_config_file: self.connection.client_config.clone(),
            statistics_interval_ms: 0,
            ..KafkaSettings::default()
        };
        let registry_config = crate::config::RegistryConfig {
            url: self.connection.registry.clone(),
            ..crate::config::RegistryConfig::default()
        };
        let io = BusError::io("write output");
        match self.command {
            Command::List { dlq, filter } => {
                let records = list(&kafka, &dlq, &filter).await?;
                for r in &records {
                    writeln!(out, "{}", list_line(r)).map_err(&io)?;
                }
                writeln!(out, "{} record(s)", records.len()).map_err(&io)?;
            }
            Command::Inspect {
                dlq,
                partition,
                offset,
            } => {
                let registry = RegistryClient::new(&registry_config)?;
                let i = inspect(&kafka, &registry, &dlq, partition, offset).await?;
                write!(out, "{}", inspection_text(&i)).map_err(&io)?;
            }
            Command::Replay {
                dlq,
                offset,
                all,
                mut filter,
                dry_run,
            } => {
                if let Some(offset) = offset {
                    filter.from = Some(offset);
                    filter.to = Some(offset);
                } else if !all && filter.from.is_none() && filter.to.is_none() {
                    return Err(BusError::Config(
                        "say which records: --partition P --offset O, --from A --to B, or --all"
                            .into(),
                    ));
                }
                let registry = RegistryClient::new(&registry_config)?;
                let producer = Producer::new(
                    &kafka,
                    &crate::config::ProducerConfig::default(),
                    registry,
                    crate::metrics::BusMetrics::default(),
                )?;
                let replayed = replay(&kafka, &producer, &dlq, &filter, dry_run).await?;
                for r in &replayed {
                    match &r.delivery {
                        Some(d) => writeln!(
                            out,
                            "replayed {dlq}/{}/{} -> {}/{}/{}",
                            r.partition, r.offset, d.topic, d.partition, d.offset
                        ),
                        None => writeln!(
                            out,
                            "would replay {dlq}/{}/{} -> {}",
                            r.partition, r.offset, r.target
                        ),
                    }
                    .map_err(&io)?;
                }
                let verb = if dry_run {
                    "would be replayed"
                } else {
                    "replayed"
                };
                writeln!(out, "{} record(s) {verb}", replayed.len()).map_err(&io)?;
            }
        }
        Ok(())
    }
}

fn printable(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "-".to_owned(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("hex:{}", hex::encode(b)),
        },
    }
}

/// One line of `list`.
pub fn list_line(r: &DlqRecord) -> String {
    match &r.letter {
        Some(l) => format!(
            "{}:{}\t{}\tkey={}\t{}\tattempts={}\t{}\t{}",
            r.partition,
            r.offset,
            l.topic,
            printable(r.key.as_deref()),
            l.class,
            l.attempts,
            rfc3339_millis(l.last_failure_ms),
            l.message
        ),
        None => format!(
            "{}:{}\t(no dlq headers)\tkey={}",
            r.partition,
            r.offset,
            printable(r.key.as_deref())
        ),
    }
}

/// The text of `inspect`.
pub fn inspection_text(i: &Inspection) -> String {
    let r = &i.record;
    let mut s = format!("record {}/{}/{}\n", r.dlq_topic, r.partition, r.offset);
    if let Some(ts) = r.timestamp_ms {
        s.push_str(&format!("dead-lettered at {}\n", rfc3339_millis(ts)));
    }
    s.push_str(&format!("key: {}\n", printable(r.key.as_deref())));
    s.push_str("headers:\n");
    for (name, value) in r.headers.iter() {
        s.push_str(&format!("  {name}: {}\n", printable(Some(value))));
    }
    s.push_str(&format!(
        "value ({} bytes, hex): {}\n",
        r.value.as_ref().map_or(0, Vec::len),
        r.value
            .as_deref()
            .map(hex::encode)
            .unwrap_or_else(|| "-".into())
    ));
    if let Some(id) = i.schema_id {
        s.push_str(&format!("writer schema id: {id}\n"));
    }
    match (&i.json, &i.decode_error) {
        (Some(json), _) => s.push_str(&format!(
            "value as JSON:\n{}\n",
            serde_json::to_string_pretty(json).unwrap_or_default()
        )),
        (None, Some(e)) => s.push_str(&format!(
            "value does not decode: {}\n",
            crate::error::chain(e.as_ref())
        )),
        (None, None) => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DlqRecord {
        let letter = DeadLetter {
            topic: "orders".into(),
            partition: 1,
            offset: 7,
            timestamp_ms: Some(5),
            key: Some(b"k".to_vec()),
            group: "g".into(),
            class: ErrorClass::HandlerFatal,
            message: "boom".into(),
            attempts: 1,
            first_failure_ms: 6,
            last_failure_ms: 6,
        };
        let original: HeaderList = [
            ("ce_id", "e1"),
            ("redrive.from", "old/0/1"),
            ("redrive.at", "1"),
        ]
        .into_iter()
        .collect();
        let headers = letter.headers(&original);
        DlqRecord {
            dlq_topic: "svc.dlq".into(),
            partition: 2,
            offset: 9,
            timestamp_ms: Some(10),
            key: Some(b"k".to_vec()),
            value: Some(vec![0, 0, 0, 0, 1, 2]),
            letter: DeadLetter::from_headers(&headers),
            headers,
        }
    }

    #[test]
    fn replay_headers_keep_originals_only_and_mark_the_redrive() {
        let h = record().replay_headers(1234);
        assert_eq!(h.get_str("ce_id"), Some("e1"));
        assert!(h.iter().all(|(n, _)| !n.starts_with("dlq.")), "{h:?}");
        assert_eq!(h.get_str(REDRIVE_FROM), Some("svc.dlq/2/9"));
        assert_eq!(h.get_str(REDRIVE_AT), Some("1234"));
        assert_eq!(
            h.iter().filter(|(n, _)| n.starts_with("redrive.")).count(),
            2
        );
    }

    #[test]
    fn filters_by_class_and_topic() {
        let r = record();
        assert!(Filter::default().matches(&r));
        let by_class = Filter {
            class: Some(ErrorClass::HandlerFatal),
            ..Filter::default()
        };
        assert!(by_class.matches(&r));
        let other_class = Filter {
            class: Some(ErrorClass::Undecodable),
            ..Filter::default()
        };
        assert!(!other_class.matches(&r));
        let other_topic = Filter {
            original_topic: Some("payments".into()),
            ..Filter::default()
        };
        assert!(!other_topic.matches(&r));
        assert!(list_line(&r).starts_with("2:9\torders\tkey=k\thandler-fatal\tattempts=1"));
    }

    #[test]
    fn cli_parses() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "dlq",
            "replay",
            "svc.dlq",
            "--partition",
            "1",
            "--offset",
            "4",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Replay {
                offset: Some(4),
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["dlq", "replay", "svc.dlq", "--offset", "4"]).is_err(),
            "offset needs partition"
        );
        let cli = Cli::try_parse_from(["dlq", "list", "svc.dlq", "--class", "retries-exhausted"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::List {
                filter: Filter {
                    class: Some(ErrorClass::RetriesExhausted),
                    ..
                },
                ..
            }
        ));
        assert!(Cli::try_parse_from(["dlq", "list", "svc.dlq", "--class", "nope"]).is_err());
    }
}
