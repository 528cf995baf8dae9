//! Topic administration: creates the three topics with their cleanup policy
//! and retention, checks existing ones and raises a retention that is too
//! low, and reads topic configs back.

use std::collections::BTreeMap;

use osago_core::outbox::Stream;
use osago_core::ports::{PortError, PortErrorKind};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigResource, ConfigSource, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::types::RDKafkaErrorCode;

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

/// Creates the missing topics, then makes sure every topic has
/// `cleanup.policy=delete` and at least the configured retention, fixing
/// what is off (with a warning). An error names the topic it is about.
pub(crate) async fn ensure_topics(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
) -> Result<(), PortError> {
    let retention: Vec<String> = STREAMS
        .iter()
        .map(|s| config.retention_ms(*s).to_string())
        .collect();
    let replication = i32::from(config.replication);
    let new_topics: Vec<NewTopic<'_>> = STREAMS
        .iter()
        .zip(&retention)
        .map(|(s, retention)| {
            NewTopic::new(
                config.topic(*s),
                config.partitions,
                TopicReplication::Fixed(replication),
            )
            .set("cleanup.policy", "delete")
            .set("retention.ms", retention)
        })
        .collect();
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

    let described = describe(admin, config).await?;
    let mut fixes = Vec::new();
    for stream in STREAMS {
        let topic = config.topic(stream);
        let resource = described
            .iter()
            .find(|r| matches!(&r.specifier, OwnedResourceSpecifier::Topic(t) if t == topic));
        let Some(resource) = resource else {
            return Err(PortError::new(
                PortErrorKind::Unavailable,
                format!("the broker described no config of topic {topic}"),
            ));
        };
        let wanted = config.retention_ms(stream);
        let policy = value(resource, "cleanup.policy");
        let retention = value(resource, "retention.ms").and_then(|v| v.parse::<i64>().ok());
        // No value reported means the broker default, which is `delete`.
        let policy_ok = policy.is_none_or(|p| p == "delete");
        let retention_ok = retention.is_some_and(|r| r < 0 || r >= wanted);
        if policy_ok && retention_ok {
            continue;
        }
        tracing::warn!(
            topic,
            cleanup_policy = policy.unwrap_or("unset"),
            retention_ms = retention.unwrap_or(0),
            required_retention_ms = wanted,
            "topic config is off; altering it"
        );
        fixes.push((topic, resource, wanted));
    }
    if fixes.is_empty() {
        return Ok(());
    }

    alter(admin, config, &fixes).await?;

    // Trust the broker, not the call: read the fixed configs back.
    let configs = topic_configs(admin, config).await?;
    for (topic, _, wanted) in &fixes {
        let entries = configs.get(*topic);
        let retention = entries
            .and_then(|e| e.get("retention.ms"))
            .and_then(|v| v.parse::<i64>().ok());
        let policy = entries.and_then(|e| e.get("cleanup.policy"));
        if !retention.is_some_and(|r| r < 0 || r >= *wanted)
            || policy.is_some_and(|p| p != "delete")
        {
            return Err(PortError::new(
                PortErrorKind::Unavailable,
                format!(
                    "topic {topic} keeps retention.ms {} (at least {wanted} required) or a cleanup policy other than delete",
                    retention.unwrap_or(0)
                ),
            ));
        }
        tracing::info!(
            topic,
            retention_ms = retention.unwrap_or(0),
            "topic config fixed"
        );
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
) -> Result<Vec<ConfigResource>, PortError> {
    let specifiers: Vec<ResourceSpecifier<'_>> = STREAMS
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
    for resource in describe(admin, config).await? {
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
