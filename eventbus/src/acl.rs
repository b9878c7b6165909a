//! ACLs as data: the typed form of `deploy/acls.toml` and the bindings it stands for.
//!
//! The file lists, per SCRAM user (principal `User:<name>`), which operations it may
//! perform on which topics, consumer groups, transactional ids or the cluster, in the
//! shape of Strimzi's `KafkaUser` `spec.authorization.acls` (resource type, name, pattern
//! type `literal` or `prefix`, operations), so that `KafkaUser` resources can be generated
//! from it. Every ACL allows, from any host.
//!
//! `busctl acls check` validates the file; `busctl acls render` prints
//! [`AclFile::bindings`], one per line in the format `deploy/local/AclSync.java` reads
//! (rust-rdkafka has no ACL admin API, so the Java admin client applies them):
//!
//! ```text
//! User:ingress TOPIC LITERAL WRITE order-service.order.created
//! ```
//!
//! Parsing is strict: unknown fields, resource types, pattern types and operations, an
//! operation Kafka does not define for the resource type, duplicates and malformed names
//! are errors that name the entry (user and ACL index and resource).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// The name Kafka gives the one cluster resource.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

/// A parsed and validated ACL file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFile {
    /// The users, in file order.
    pub users: Vec<User>,
}

/// One SCRAM user and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name; the principal is `User:<name>`.
    pub name: String,
    /// Its ACLs, in file order.
    pub acls: Vec<Acl>,
}

impl User {
    /// `User:<name>`, as Kafka's authorizer names the principal.
    pub fn principal(&self) -> String {
        format!("User:{}", self.name)
    }
}

/// The operations allowed on one resource (pattern).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// What the ACL is about.
    pub resource: Resource,
    /// What may be done to it (never empty, no duplicates).
    pub operations: Vec<Operation>,
}

/// A resource pattern: a type and a literal name or a name prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// Topic, group, transactional id or cluster.
    pub kind: ResourceType,
    /// The name, or the prefix when `pattern` is [`PatternType::Prefix`].
    pub name: String,
    /// Literal name or prefix.
    pub pattern: PatternType,
}

/// A word in `deploy/acls.toml` that names no resource type, pattern type or operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (expected one of: {expected})")]
pub struct UnknownSpelling {
    /// What kind of word it should have been, e.g. `operation`.
    pub what: &'static str,
    /// The word in the file.
    pub given: String,
    /// The accepted spellings, comma-separated.
    pub expected: String,
}

/// Declares an enum whose variants have a spelling in `deploy/acls.toml` (Strimzi's) and
/// one in Kafka's Java API (the enum constant `AclSync.java` reads).
macro_rules! spelled_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $file:literal / $kafka:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spelling in `deploy/acls.toml` (Strimzi's).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $file,)+ }
            }

            /// The name of the constant in Kafka's Java API.
            pub fn kafka_name(self) -> &'static str {
                match self { $($name::$variant => $kafka,)+ }
            }

            /// Parses the file spelling (exact, case-sensitive).
            pub fn parse(s: &str) -> Result<Self, UnknownSpelling> {
                match s {
                    $($file => Ok($name::$variant),)+
                    _ => Err(UnknownSpelling {
                        what: $what,
                        given: s.to_owned(),
                        expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_enum!(
    /// The kinds of resource an ACL can be about.
    ResourceType, "resource type" {
        /// A topic.
        Topic = "topic" / "TOPIC",
        /// A consumer group.
        Group = "group" / "GROUP",
        /// A producer's `transactional.id`.
        TransactionalId = "transactionalId" / "TRANSACTIONAL_ID",
        /// The cluster itself (name `kafka-cluster`).
        Cluster = "cluster" / "CLUSTER",
    }
);

spelled_enum!(
    /// How a resource name is matched.
    PatternType, "pattern type" {
        /// The exact name.
        Literal = "literal" / "LITERAL",
        /// Every name that starts with it.
        Prefix = "prefix" / "PREFIXED",
    }
);

spelled_enum!(
    /// Kafka's ACL operations.
    Operation, "operation" {
        /// Consume; for groups, join and commit.
        Read = "Read" / "READ",
        /// Produce; for transactional ids, use them.
        Write = "Write" / "WRITE",
        /// Create topics.
        Create = "Create" / "CREATE",
        /// Delete topics, groups, records.
        Delete = "Delete" / "DELETE",
        /// Alter (e.g. partitions, cluster ACLs).
        Alter = "Alter" / "ALTER",
        /// Metadata, offsets, describe.
        Describe = "Describe" / "DESCRIBE",
        /// Inter-broker actions.
        ClusterAction = "ClusterAction" / "CLUSTER_ACTION",
        /// Change configs.
        AlterConfigs = "AlterConfigs" / "ALTER_CONFIGS",
        /// Read configs.
        DescribeConfigs = "DescribeConfigs" / "DESCRIBE_CONFIGS",
        /// Idempotent producing without Write on any topic (cluster only).
        IdempotentWrite = "IdempotentWrite" / "IDEMPOTENT_WRITE",
        /// Every operation.
        All = "All" / "ALL",
    }
);

impl ResourceType {
    /// The operations Kafka defines for this resource type (as Kafka's `AclCommand`
    /// accepts them; groups have configs since KIP-848).
    pub fn valid_operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                AlterConfigs,
                DescribeConfigs,
                All,
            ],
            ResourceType::Group => &[Read, Delete, Describe, AlterConfigs, DescribeConfigs, All],
            ResourceType::TransactionalId => &[Write, Describe, All],
            ResourceType::Cluster => &[
                Create,
                Alter,
                Describe,
                ClusterAction,
                AlterConfigs,
                DescribeConfigs,
                IdempotentWrite,
                All,
            ],
        }
    }
}

/// One ALLOW binding: a principal may perform one operation on one resource pattern,
/// from any host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    /// `User:<name>`.
    pub principal: String,
    /// The resource pattern.
    pub resource: Resource,
    /// The operation.
    pub operation: Operation,
}

impl fmt::Display for Binding {
    /// The line `AclSync.java` reads:
    /// `<principal> <resource type> <pattern type> <operation> <name>`, in Kafka's names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.principal,
            self.resource.kind.kafka_name(),
            self.resource.pattern.kafka_name(),
            self.operation.kafka_name(),
            self.resource.name
        )
    }
}

/// Why an ACL file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not TOML, or not the file's shape (unknown or missing fields, wrong types).
    #[error("{path}: {source}")]
    Syntax {
        /// The file.
        path: String,
        /// The TOML error (with line and column).
        source: Box<toml::de::Error>,
    },
    /// An entry breaks a rule.
    #[error("{path}: {entry}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// Which entry: user, ACL index and resource.
        entry: String,
        /// What is wrong.
        #[source]
        problem: EntryProblem,
    },
}

/// What is wrong with one entry of the ACL file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// A word that names no resource type, pattern type or operation.
    #[error(transparent)]
    Spelling(#[from] UnknownSpelling),
    /// A rule of the file (names, duplicates, operations that fit the resource).
    #[error("{0}")]
    Rule(String),
}

impl EntryProblem {
    fn rule(text: impl Into<String>) -> Self {
        EntryProblem::Rule(text.into())
    }
}

// The file as written, before validation (strings where the typed form has enums, so
// that errors can name the entry).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    user: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    #[serde(default)]
    acls: Vec<RawAcl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    resource: RawResource,
    operations: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(rename = "patternType", default)]
    pattern_type: Option<String>,
}

impl AclFile {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse_named(&text, &shown)
    }

    /// Parses and validates `text`; errors name the file `acls.toml`.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        Self::parse_named(text, "acls.toml")
    }

    fn parse_named(text: &str, path: &str) -> Result<Self, AclError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| AclError::Syntax {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let invalid = |entry: String, problem: EntryProblem| AclError::Invalid {
            path: path.to_owned(),
            entry,
            problem,
        };
        let mut users = Vec::with_capacity(raw.user.len());
        let mut names = BTreeSet::new();
        for (ui, ru) in raw.user.into_iter().enumerate() {
            let user_entry = format!("user[{ui}] `{}`", ru.name);
            check_user_name(&ru.name).map_err(|m| invalid(user_entry.clone(), m))?;
            if !names.insert(ru.name.clone()) {
                return Err(invalid(
                    user_entry,
                    EntryProblem::rule("user declared twice (merge the two entries)"),
                ));
            }
            let mut acls = Vec::with_capacity(ru.acls.len());
            let mut resources = BTreeSet::new();
            for (ai, ra) in ru.acls.into_iter().enumerate() {
                let entry = format!(
                    "user `{}`, acls[{ai}] ({} `{}`)",
                    ru.name, ra.resource.kind, ra.resource.name
                );
                let acl = validate_acl(ra).map_err(|m| invalid(entry.clone(), m))?;
                if !resources.insert(acl.resource.clone()) {
                    return Err(invalid(
                        entry,
                        EntryProblem::rule(
                            "resource listed twice for this user (merge the operations into one entry)",
                        ),
                    ));
                }
                acls.push(acl);
            }
            users.push(User {
                name: ru.name,
                acls,
            });
        }
        Ok(AclFile { users })
    }

    /// Every binding the file stands for, sorted and without duplicates.
    pub fn bindings(&self) -> Vec<Binding> {
        let mut out = BTreeSet::new();
        for user in &self.users {
            let principal = user.principal();
            for acl in &user.acls {
                for &operation in &acl.operations {
                    out.insert(Binding {
                        principal: principal.clone(),
                        resource: acl.resource.clone(),
                        operation,
                    });
                }
            }
        }
        out.into_iter().collect()
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn validate_acl(raw: RawAcl) -> Result<Acl, EntryProblem> {
    let kind = ResourceType::parse(&raw.resource.kind)?;
    let pattern = match &raw.resource.pattern_type {
        None => PatternType::Literal,
        Some(p) => PatternType::parse(p)?,
    };
    let name = raw.resource.name;
    check_resource_name(kind, pattern, &name)?;
    if raw.operations.is_empty() {
        return Err(EntryProblem::rule("no operations"));
    }
    let mut operations = Vec::with_capacity(raw.operations.len());
    for op in &raw.operations {
        let op = Operation::parse(op)?;
        if !kind.valid_operations().contains(&op) {
            return Err(EntryProblem::Rule(format!(
                "operation `{op}` does not apply to a {kind} (valid: {})",
                kind.valid_operations()
                    .iter()
                    .map(|o| o.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if operations.contains(&op) {
            return Err(EntryProblem::Rule(format!("operation `{op}` listed twice")));
        }
        operations.push(op);
    }
    Ok(Acl {
        resource: Resource {
            kind,
            name,
            pattern,
        },
        operations,
    })
}

/// SCRAM user names: letters, digits, `.`, `_`, `-` (no `,` or `=`, which SCRAM escapes,
/// and nothing a shell or a config file would need quoting for).
fn check_user_name(name: &str) -> Result<(), EntryProblem> {
    if name.is_empty() {
        return Err(EntryProblem::rule("empty user name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(EntryProblem::Rule(format!(
            "user name has `{c}`; allowed: letters, digits, '.', '_', '-'"
        )));
    }
    Ok(())
}

fn check_resource_name(
    kind: ResourceType,
    pattern: PatternType,
    name: &str,
) -> Result<(), EntryProblem> {
    if name.is_empty() {
        return Err(EntryProblem::rule("empty resource name"));
    }
    if name == "*" {
        return Err(EntryProblem::rule(
            "`*` (every resource) is not allowed here: list the resources, or use a prefix",
        ));
    }
    match kind {
        ResourceType::Cluster => {
            if name != CLUSTER_RESOURCE_NAME || pattern != PatternType::Literal {
                return Err(EntryProblem::Rule(format!(
                    "the cluster resource is named `{CLUSTER_RESOURCE_NAME}`, pattern literal"
                )));
            }
        }
        ResourceType::Topic => {
            // Kafka's legal topic characters; a prefix obeys the same rule.
            if name.len() > 249 {
                return Err(EntryProblem::rule("topic name longer than 249 characters"));
            }
            if let Some(c) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(EntryProblem::Rule(format!(
                    "topic name has `{c}`; Kafka allows letters, digits, '.', '_', '-'"
                )));
            }
        }
        ResourceType::Group | ResourceType::TransactionalId => {
            // Legal in Kafka, but the rendered line ends with the name, and a name with
            // whitespace or control characters is a typo here.
            if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(EntryProblem::Rule(format!(
                    "{kind} name has whitespace or control characters"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../deploy/acls.toml");

    fn err(text: &str) -> String {
        AclFile::parse(text).unwrap_err().to_string()
    }

    fn rendered(file: &AclFile) -> Vec<String> {
        file.bindings().iter().map(ToString::to_string).collect()
    }

    fn has(lines: &[String], line: &str) -> bool {
        lines.iter().any(|l| l == line)
    }

    #[test]
    fn the_shipped_file_is_valid_and_least_privilege() {
        let file = AclFile::parse(SHIPPED).unwrap();
        let names: Vec<&str> = file.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ingress", "payment", "pipeline", "registry"]);
        let lines = rendered(&file);

        // ingress writes (and reads back) exactly its three topics.
        for t in [
            "order-service.order.created",
            "order-service.order.updated",
            "inventory-service.stock.adjusted",
        ] {
            assert!(has(
                &lines,
                &format!("User:ingress TOPIC LITERAL WRITE {t}")
            ));
            assert!(has(&lines, &format!("User:ingress TOPIC LITERAL READ {t}")));
        }
        let ingress_writes = lines
            .iter()
            .filter(|l| l.starts_with("User:ingress TOPIC") && l.contains(" WRITE "))
            .count();
        assert_eq!(ingress_writes, 3);
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("User:ingress") && l.contains("payment-service"))
        );
        assert!(has(
            &lines,
            "User:ingress GROUP PREFIXED READ order-service-"
        ));

        // payment: reads orders, never writes them; transactions under its prefix.
        assert!(has(
            &lines,
            "User:payment TOPIC LITERAL READ order-service.order.created"
        ));
        assert!(!has(
            &lines,
            "User:payment TOPIC LITERAL WRITE order-service.order.created"
        ));
        assert!(has(
            &lines,
            "User:payment TOPIC LITERAL WRITE payment-service.dlq"
        ));
        assert!(has(
            &lines,
            "User:payment TRANSACTIONAL_ID PREFIXED WRITE payment-service"
        ));
        assert!(has(
            &lines,
            "User:payment TRANSACTIONAL_ID PREFIXED DESCRIBE payment-service"
        ));
        assert!(has(
            &lines,
            "User:payment GROUP PREFIXED READ payment-service"
        ));

        // pipeline: five inputs read-only, three outputs and its state snapshots.
        let pipeline_writes: BTreeSet<&str> = lines
            .iter()
            .filter(|l| l.starts_with("User:pipeline TOPIC LITERAL WRITE "))
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(
            pipeline_writes.into_iter().collect::<Vec<_>>(),
            [
                "inventory-service.dlq",
                "inventory-service.progress",
                "inventory-service.snapshots",
                "inventory-service.stock.updated"
            ]
        );
        assert!(has(
            &lines,
            "User:pipeline TRANSACTIONAL_ID PREFIXED WRITE inventory-service"
        ));
        assert!(has(
            &lines,
            "User:pipeline GROUP PREFIXED READ inventory-service"
        ));

        // registry: only its own topics and group.
        assert!(
            lines
                .iter()
                .filter(|l| l.starts_with("User:registry TOPIC"))
                .all(|l| l.ends_with(" kafkasql-journal")
                    || l.ends_with(" kafkasql-snapshots")
                    || l.ends_with(" registry-events"))
        );
        assert!(has(
            &lines,
            "User:registry GROUP PREFIXED READ apicurio-registry-"
        ));

        // Nobody gets anything on the cluster resource, nobody is named like a super user.
        assert!(!lines.iter().any(|l| l.contains(" CLUSTER ")));
        assert!(file.user("admin").is_none() && file.user("broker").is_none());
    }

    #[test]
    fn renders_one_line_per_operation_in_kafka_names_sorted() {
        let file = AclFile::parse(
            r#"
            [[user]]
            name = "svc"
            [[user.acls]]
            resource = { type = "transactionalId", name = "svc-", patternType = "prefix" }
            operations = ["Write", "Describe"]
            [[user.acls]]
            resource = { type = "topic", name = "a.b" }
            operations = ["Read"]
            [[user.acls]]
            resource = { type = "cluster", name = "kafka-cluster" }
            operations = ["IdempotentWrite"]
            "#,
        )
        .unwrap();
        assert_eq!(
            rendered(&file),
            [
                "User:svc TOPIC LITERAL READ a.b",
                "User:svc TRANSACTIONAL_ID PREFIXED WRITE svc-",
                "User:svc TRANSACTIONAL_ID PREFIXED DESCRIBE svc-",
                "User:svc CLUSTER LITERAL IDEMPOTENT_WRITE kafka-cluster",
            ]
        );
        assert_eq!(file.users[0].acls[1].resource.pattern, PatternType::Literal);
    }

    #[test]
    fn an_empty_file_has_no_bindings() {
        assert!(AclFile::parse("").unwrap().bindings().is_empty());
    }

    #[test]
    fn rejects_an_unknown_operation_naming_the_entry() {
        let e = err(r#"
            [[user]]
            name = "ingress"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            operations = ["Read"]
            [[user.acls]]
            resource = { type = "topic", name = "order-service.order.created" }
            operations = ["Write", "Wrte"]
            "#);
        assert!(
            e.contains("user `ingress`, acls[1] (topic `order-service.order.created`)"),
            "{e}"
        );
        assert!(e.contains("unknown operation `Wrte`"), "{e}");
        assert!(e.contains("IdempotentWrite"), "lists the valid ones: {e}");
    }

    #[test]
    fn operations_are_case_sensitive_like_strimzi() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            operations = ["READ"]
            "#);
        assert!(e.contains("unknown operation `READ`"), "{e}");
    }

    #[test]
    fn rejects_an_unknown_resource_type() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topics", name = "t" }
            operations = ["Read"]
            "#);
        assert!(e.contains("user `u`, acls[0] (topics `t`)"), "{e}");
        assert!(e.contains("unknown resource type `topics`"), "{e}");
        assert!(e.contains("transactionalId"), "{e}");
    }

    #[test]
    fn rejects_an_unknown_pattern_type() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "group", name = "g", patternType = "prefixed" }
            operations = ["Read"]
            "#);
        assert!(e.contains("unknown pattern type `prefixed`"), "{e}");
        assert!(e.contains("literal, prefix"), "{e}");
    }

    #[test]
    fn rejects_an_operation_that_does_not_apply_to_the_resource_type() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "group", name = "g" }
            operations = ["Write"]
            "#);
        assert!(
            e.contains("operation `Write` does not apply to a group"),
            "{e}"
        );
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            operations = ["IdempotentWrite"]
            "#);
        assert!(e.contains("does not apply to a topic"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_and_missing_ones() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t", pattern = "prefix" }
            operations = ["Read"]
            "#);
        assert!(e.contains("unknown field `pattern`"), "{e}");
        let e = err(r#"
            [[user]]
            name = "u"
            host = "*"
            "#);
        assert!(e.contains("unknown field `host`"), "{e}");
        let e = err(r#"
            [[users]]
            name = "u"
            "#);
        assert!(e.contains("unknown field `users`"), "{e}");
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            "#);
        assert!(e.contains("missing field `operations`"), "{e}");
    }

    #[test]
    fn rejects_duplicates() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user]]
            name = "u"
            "#);
        assert!(e.contains("user[1] `u`: user declared twice"), "{e}");
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            operations = ["Read", "Read"]
            "#);
        assert!(e.contains("operation `Read` listed twice"), "{e}");
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            operations = ["Read"]
            [[user.acls]]
            resource = { type = "topic", name = "t", patternType = "literal" }
            operations = ["Write"]
            "#);
        assert!(
            e.contains("acls[1] (topic `t`): resource listed twice"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_names() {
        let acl = |kind: &str, name: &str, pattern: &str| {
            err(&format!(
                "[[user]]\nname = \"u\"\n[[user.acls]]\nresource = {{ type = \"{kind}\", name = \"{name}\", patternType = \"{pattern}\" }}\noperations = [\"Describe\"]\n"
            ))
        };
        assert!(acl("topic", "", "literal").contains("empty resource name"));
        assert!(acl("topic", "*", "literal").contains("`*`"));
        assert!(acl("topic", "a b", "literal").contains("topic name has ` `"));
        assert!(acl("topic", "a/b", "prefix").contains("topic name has `/`"));
        assert!(acl("group", "a\\tb", "literal").contains("whitespace"));
        assert!(acl("cluster", "my-cluster", "literal").contains("`kafka-cluster`"));
        assert!(acl("cluster", "kafka-cluster", "prefix").contains("pattern literal"));
        assert!(err("[[user]]\nname = \"a,b\"\n").contains("user[0] `a,b`: user name has `,`"));
        assert!(err("[[user]]\nname = \"\"\n").contains("empty user name"));
    }

    #[test]
    fn rejects_an_acl_without_operations() {
        let e = err(r#"
            [[user]]
            name = "u"
            [[user.acls]]
            resource = { type = "topic", name = "t" }
            operations = []
            "#);
        assert!(e.contains("acls[0] (topic `t`): no operations"), "{e}");
    }

    #[test]
    fn every_operation_and_type_round_trips_its_spelling() {
        for &op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()).unwrap(), op);
        }
        for &kind in ResourceType::ALL {
            assert_eq!(ResourceType::parse(kind.as_str()).unwrap(), kind);
            assert!(kind.valid_operations().contains(&Operation::All));
        }
        for &p in PatternType::ALL {
            assert_eq!(PatternType::parse(p.as_str()).unwrap(), p);
        }
    }
}
