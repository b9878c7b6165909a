//! Against the real cluster: a deployment that is not set up stops the service at
//! start-up with a [`PaymentError::Topic`] that says what to run.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Service;
use payment::{PaymentError, SimulatedGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_stop_the_service_with_a_setup_error() {
    let env = common::setup(3).await;
    let mut config = env.config();
    // A prefix under which no topic exists.
    config.topics.prefix = format!("{}missing-", env.cluster.prefix());
    let gateway = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let error = Service::start(config, gateway)
        .await
        .wait_exit(Duration::from_secs(60))
        .await
        .expect_err("the service must not start without its topics");
    assert!(
        matches!(&error, PaymentError::Topic { topic, .. } if topic.ends_with("order.created")),
        "{error}"
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(error.fault(), eventbus::Fault::Setup, "{error}");
    assert!(!error.is_retriable(), "{error}");
    env.cluster.cleanup().await;
}
