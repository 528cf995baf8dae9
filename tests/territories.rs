//! Every region, priced by its settlement (issue 16, items 2 and 3): a
//! request for each of the 89 region codes, with a settlement of that
//! region, is accepted (202) and its lawful price range is the one the
//! territory table gives that settlement; a taxi's range is above personal
//! use of the same car.

use std::time::Duration;

use osago::EmbeddedConfig;
use osago_core::request::{decode, QuoteRequest};
use osago_core::tariff;
use osago_tests::sample_json;
use serde_json::{json, Value};

/// The sample with its owner registered in `settlement` of `region` and a
/// start date three days on (so the expected range is computable here).
fn request_in(region: &str, settlement: &str) -> (Value, QuoteRequest) {
    let mut body = sample_json();
    body["owner"]["address"]["region_code"] = json!(region);
    body["owner"]["address"]["city"] = json!(settlement);
    let start = chrono::Utc::now().date_naive() + chrono::Duration::days(3);
    body["policy"]["start_date"] = json!(start.to_string());
    let request = decode(body.to_string().as_bytes()).expect("the sample decodes");
    (body, request)
}

fn range_of(created: &Value) -> (i64, i64) {
    let range = &created["lawful_range"];
    (
        range["min_kopecks"].as_i64().expect("min"),
        range["max_kopecks"].as_i64().expect("max"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_every_region_is_accepted_and_priced_by_its_settlement() {
    let mut config = EmbeddedConfig {
        sim_speed: 50.0,
        ..EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    config.core.request_deadline = Duration::from_secs(5);
    config.engine.insurer_deadline = Duration::from_secs(5);
    let system = osago_tests::start_embedded(config).await;
    let url = format!("http://{}/api/osago/requests", system.addr);
    let http = reqwest::Client::new();

    let post = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http.post(&url).json(&body).send().await.expect("POST");
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON answer");
            (status, body)
        }
    };

    let territories = tariff::territories();
    assert_eq!(territories.len(), 89, "every region of the federation");
    for territory in territories {
        // The first settlement the table names (the regional centre as a
        // rule), and one it does not name: both are valid addresses.
        let named = territory.settlements.first().map(|(name, _)| *name);
        for settlement in named.into_iter().chain(["Посёлок Новый"]) {
            let (body, request) = request_in(territory.code, settlement);
            let (status, created) = post(body).await;
            assert_eq!(
                status,
                reqwest::StatusCode::ACCEPTED,
                "{} {settlement}: {created}",
                territory.code
            );
            let start = request.policy.start_date.expect("set above");
            let expected = tariff::lawful_range(&request, start).expect("priced");
            assert_eq!(
                range_of(&created),
                (expected.min_kopecks.get(), expected.max_kopecks.get()),
                "{} {settlement}: the range of KT {}",
                territory.code,
                territory.kt(settlement)
            );
        }
    }

    // Within one region the settlement decides: Chelyabinsk (2.10) above
    // Troitsk, which the table does not name (1.00).
    let (city, _) = request_in("74", "г. Челябинск");
    let (town, _) = request_in("74", "Троицк");
    let (city, town) = (post(city).await.1, post(town).await.1);
    assert!(range_of(&city).0 > range_of(&town).0, "{city} {town}");

    // A taxi's lawful range is above personal use of the same car.
    let (mut taxi, _) = request_in("77", "Москва");
    taxi["policy"]["purpose"] = json!("taxi");
    let (personal, _) = request_in("77", "Москва");
    let (taxi, personal) = (post(taxi).await, post(personal).await);
    assert_eq!(taxi.0, reqwest::StatusCode::ACCEPTED, "{}", taxi.1);
    let (t, p) = (range_of(&taxi.1), range_of(&personal.1));
    assert!(t.0 > p.0 && t.1 > p.1, "taxi {t:?}, personal {p:?}");

    // A code that is no region is refused with the field named.
    let (unknown, _) = request_in("77", "Москва");
    let mut unknown = unknown;
    unknown["owner"]["address"]["region_code"] = json!("88");
    let (status, problem) = post(unknown).await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "{problem}"
    );
    assert!(
        problem.to_string().contains("owner.address.region_code"),
        "{problem}"
    );
}
