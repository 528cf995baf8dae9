//! Topic administration by [`TopicMode`]: create missing topics with their
//! [`TopicSettings`](super::config::TopicSettings), verify existing ones
//! (one line per difference: topic, setting, expected, actual), alter a
//! retention or cleanup policy only when asked, or stay out of it; and read
//! topic configs back.

use std::collections::BTreeMap;
use std::fmt;

use osago_core::outbox::Stream;
use osago_core::ports::{PortError, PortErrorKind};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigResource, ConfigSource, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::config::TopicMode;
use super::context::TracingContext;
use super::{error_code, kafka_error, wire, KafkaConfig};

/// Configs of each topic, by topic then by config name.
pub(crate) type TopicConfigs = BTreeMap<String, BTreeMap<String, String>>;

const STREAMS: [Stream; 3] = [Stream::Requests, Stream::Quotes, Stream::Errors];

fn options(config: &KafkaConfig) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(config.request_timeout))
        .operation_timeout(Some(config.request_timeout))
}

/// One way a topic differs from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    topic: String,
    setting: &'static str,
    expected: String,
    actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic {}: {} expected {}, actual {}",
            self.topic, self.setting, self.expected, self.actual
        )
    }
}

/// Does what `config.topic_mode` says (see [`TopicMode`]).
pub(crate) async fn ensure_topics(
    admin: &AdminClient<TracingContext>,
    producer: &FutureProducer<TracingContext>,
    config: &KafkaConfig,
) -> Result<(), PortError> {
    let mode = config.topic_mode;
    if mode == TopicMode::Off {
        tracing::info!("topic management is off: the topics are not checked");
        return Ok(());
    }
    if mode != TopicMode::Verify {
        create_missing(admin, config).await?;
    }
    let mismatches = mismatches(admin, producer, config).await?;
    if mismatches.is_empty() {
        return Ok(());
    }
    match mode {
        TopicMode::Verify => {
            let lines: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
            Err(PortError::new(
                PortErrorKind::Misconfigured,
                format!(
                    "the topics differ from their settings (topic mode verify):\n{}",
                    lines.join("\n")
                ),
            ))
        }
        TopicMode::Create => {
            for m in &mismatches {
                tracing::warn!(topic = %m.topic, setting = m.setting, expected = %m.expected, actual = %m.actual, "topic differs from its settings; left as it is (topic mode create)");
            }
            Ok(())
        }
        TopicMode::Alter => alter_retention(admin, config, &mismatches).await,
        TopicMode::Off => Ok(()),
    }
}

/// Creates the topics that do not exist yet, with their settings.
async fn create_missing(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
) -> Result<(), PortError> {
    let retention: Vec<String> = STREAMS
        .iter()
        .map(|s| config.retention_ms(*s).to_string())
        .collect();
    let mut new_topics: Vec<NewTopic<'_>> = STREAMS
        .iter()
        .zip(&retention)
        .map(|(s, retention)| {
            let settings = config.topic_settings(*s);
            NewTopic::new(
                config.topic(*s),
                settings.partitions,
                TopicReplication::Fixed(i32::from(settings.replication)),
            )
            .set("cleanup.policy", "delete")
            .set("retention.ms", retention)
        })
        .collect();
    // The dead-letter topic: one partition, the request topic's retention
    // and replication (a poison record may be a request).
    let requests = config.topic_settings(Stream::Requests);
    let dead_retention = config.retention_ms(Stream::Requests).to_string();
    new_topics.push(
        NewTopic::new(
            &config.dead_letter,
            1,
            TopicReplication::Fixed(i32::from(requests.replication)),
        )
        .set("cleanup.policy", "delete")
        .set("retention.ms", &dead_retention),
    );
    let results = admin
        .create_topics(&new_topics, &options(config))
        .await
        .map_err(|e| kafka_error("creating topics failed", e))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "topic exists")
            }
            Err((topic, code)) => {
                return Err(PortError::new(
                    PortErrorKind::Unavailable,
                    format!("creating topic {topic} failed: {code}"),
                ))
            }
        }
    }
    Ok(())
}

/// Partitions and replication factor of each existing topic of ours, from
/// the brokers' metadata for all topics (asking for one topic by name may
/// have the broker auto-create it).
async fn layouts(
    producer: &FutureProducer<TracingContext>,
    config: &KafkaConfig,
) -> Result<BTreeMap<String, (i32, usize)>, PortError> {
    let producer = producer.clone();
    let timeout = config.request_timeout;
    let ours: Vec<String> = STREAMS
        .iter()
        .map(|s| config.topic(*s).to_owned())
        .chain([config.dead_letter.clone()])
        .collect();
    tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|e| kafka_error("reading topic metadata failed", e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| ours.iter().any(|o| o == t.name()))
            .map(|t| {
                let partitions = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
                let replication = t
                    .partitions()
                    .iter()
                    .map(|p| p.replicas().len())
                    .min()
                    .unwrap_or(0);
                (t.name().to_owned(), (partitions, replication))
            })
            .collect())
    })
    .await
    .map_err(|_| {
        PortError::new(
            PortErrorKind::Unavailable,
            "reading topic metadata panicked",
        )
    })?
}

/// Every way the topics differ from their settings.
async fn mismatches(
    admin: &AdminClient<TracingContext>,
    producer: &FutureProducer<TracingContext>,
    config: &KafkaConfig,
) -> Result<Vec<Mismatch>, PortError> {
    let layouts = layouts(producer, config).await?;
    let existing: Vec<Stream> = STREAMS
        .into_iter()
        .filter(|s| layouts.contains_key(config.topic(*s)))
        .collect();
    let described = describe(admin, config, &existing).await?;
    let mut out = Vec::new();
    // The dead-letter topic must exist (its settings are the platform's).
    if !layouts.contains_key(&config.dead_letter) {
        out.push(Mismatch {
            topic: config.dead_letter.clone(),
            setting: "existence",
            expected: "a topic (the dead-letter topic)".into(),
            actual: "missing".into(),
        });
    }
    for stream in STREAMS {
        let topic = config.topic(stream);
        let settings = config.topic_settings(stream);
        let mismatch = |setting, expected: String, actual: String| Mismatch {
            topic: topic.to_owned(),
            setting,
            expected,
            actual,
        };
        let Some((partitions, replication)) = layouts.get(topic) else {
            out.push(mismatch("existence", "a topic".into(), "missing".into()));
            continue;
        };
        if *partitions != settings.partitions {
            out.push(mismatch(
                "partitions",
                settings.partitions.to_string(),
                partitions.to_string(),
            ));
        }
        if settings.replication > 0 && *replication != settings.replication as usize {
            out.push(mismatch(
                "replication factor",
                settings.replication.to_string(),
                replication.to_string(),
            ));
        }
        let resource = described
            .iter()
            .find(|r| matches!(&r.specifier, OwnedResourceSpecifier::Topic(t) if t == topic));
        let Some(resource) = resource else {
            out.push(mismatch(
                "config",
                "described".into(),
                "not described by the broker".into(),
            ));
            continue;
        };
        // No value reported means the broker default, which is `delete`.
        let policy = value(resource, "cleanup.policy").unwrap_or("delete");
        if policy != "delete" {
            out.push(mismatch(
                "cleanup.policy",
                "delete".into(),
                policy.to_owned(),
            ));
        }
        let retention = value(resource, "retention.ms");
        if retention.and_then(|r| r.parse::<i64>().ok()) != Some(settings.retention_ms) {
            out.push(mismatch(
                "retention.ms",
                settings.retention_ms.to_string(),
                retention.unwrap_or("unset").to_owned(),
            ));
        }
    }
    Ok(out)
}

/// Alter mode: sets the cleanup policy and retention of every topic where
/// they differ (partitions and replication are reported, never changed),
/// then reads them back.
async fn alter_retention(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
    mismatches: &[Mismatch],
) -> Result<(), PortError> {
    for m in mismatches {
        tracing::warn!(topic = %m.topic, setting = m.setting, expected = %m.expected, actual = %m.actual, "topic differs from its settings");
    }
    let streams: Vec<Stream> = STREAMS
        .into_iter()
        .filter(|s| {
            mismatches.iter().any(|m| {
                m.topic == config.topic(*s)
                    && matches!(m.setting, "cleanup.policy" | "retention.ms")
            })
        })
        .collect();
    if streams.is_empty() {
        return Ok(());
    }
    let described = describe(admin, config, &streams).await?;
    let fixes: Vec<(&str, &ConfigResource, i64)> = streams
        .iter()
        .zip(&described)
        .map(|(s, resource)| (config.topic(*s), resource, config.retention_ms(*s)))
        .collect();
    alter(admin, config, &fixes).await?;

    // Trust the broker, not the call: read the fixed configs back.
    let configs = topic_configs(admin, config).await?;
    for (topic, _, wanted) in &fixes {
        let entries = configs.get(*topic);
        let retention = entries
            .and_then(|e| e.get("retention.ms"))
            .and_then(|v| v.parse::<i64>().ok());
        let policy = entries.and_then(|e| e.get("cleanup.policy"));
        if retention != Some(*wanted) || policy.is_some_and(|p| p != "delete") {
            return Err(PortError::new(
                PortErrorKind::Misconfigured,
                format!(
                    "topic {topic} keeps retention.ms {} ({wanted} set) or a cleanup policy other than delete",
                    retention.unwrap_or(0)
                ),
            ));
        }
        tracing::info!(topic, retention_ms = wanted, "topic config altered");
    }
    Ok(())
}

/// Applies the fixes: the legacy `AlterConfigs` through rdkafka (which
/// replaces a topic's whole dynamic config, so what was set on the topic is
/// carried over), or `IncrementalAlterConfigs` when the broker lacks the
/// legacy call.
async fn alter(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
    fixes: &[(&str, &ConfigResource, i64)],
) -> Result<(), PortError> {
    let mut sets: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    for (topic, resource, wanted) in fixes {
        let mut entries: BTreeMap<String, String> = resource
            .entries
            .iter()
            .filter(|e| e.source == ConfigSource::DynamicTopic && !e.is_read_only)
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        entries.insert("cleanup.policy".into(), "delete".into());
        entries.insert("retention.ms".into(), wanted.to_string());
        sets.push((topic, entries.into_iter().collect()));
    }
    let alters: Vec<AlterConfig<'_>> = sets
        .iter()
        .map(|(topic, entries)| {
            entries.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(topic)),
                |alter, (k, v)| alter.set(k, v),
            )
        })
        .collect();
    let unsupported = |code: Option<RDKafkaErrorCode>| {
        matches!(
            code,
            Some(RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion)
        )
    };
    let mut incremental: Vec<&(&str, &ConfigResource, i64)> = Vec::new();
    match admin.alter_configs(&alters, &options(config)).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(_) => {}
                    Err((OwnedResourceSpecifier::Topic(topic), code))
                        if unsupported(Some(code)) =>
                    {
                        incremental.extend(fixes.iter().filter(|f| f.0 == topic));
                    }
                    Err((specifier, code)) => {
                        return Err(PortError::new(
                            PortErrorKind::Unavailable,
                            format!("altering the config of {specifier:?} failed: {code}"),
                        ))
                    }
                }
            }
        }
        Err(err) if unsupported(error_code(&err)) => incremental.extend(fixes),
        Err(err) => return Err(kafka_error("altering topic configs failed", err)),
    }
    for (topic, _, wanted) in incremental {
        tracing::info!(
            topic,
            "broker lacks AlterConfigs; using IncrementalAlterConfigs"
        );
        let retention = wanted.to_string();
        wire::incremental_alter_topic(
            &config.bootstrap,
            &config.client_id,
            topic,
            &[("cleanup.policy", "delete"), ("retention.ms", &retention)],
            config.request_timeout,
        )
        .await?;
    }
    Ok(())
}

fn value<'a>(resource: &'a ConfigResource, name: &str) -> Option<&'a str> {
    resource.get(name).and_then(|e| e.value.as_deref())
}

async fn describe(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
    streams: &[Stream],
) -> Result<Vec<ConfigResource>, PortError> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let specifiers: Vec<ResourceSpecifier<'_>> = streams
        .iter()
        .map(|s| ResourceSpecifier::Topic(config.topic(*s)))
        .collect();
    let results = admin
        .describe_configs(&specifiers, &options(config))
        .await
        .map_err(|e| kafka_error("describing topic configs failed", e))?;
    results
        .into_iter()
        .zip(&specifiers)
        .map(|(result, specifier)| {
            result.map_err(|code| {
                PortError::new(
                    PortErrorKind::Unavailable,
                    format!("describing the config of {specifier:?} failed: {code}"),
                )
            })
        })
        .collect()
}

/// The configs of the three topics as the broker reports them.
pub(crate) async fn topic_configs(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
) -> Result<TopicConfigs, PortError> {
    let mut out = TopicConfigs::new();
    for resource in describe(admin, config, &STREAMS).await? {
        let OwnedResourceSpecifier::Topic(topic) = resource.specifier else {
            continue;
        };
        let entries = resource
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        out.insert(topic, entries);
    }
    Ok(out)
}
