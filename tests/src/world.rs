//! The test world most in-process tests start from: a store on one
//! database, a registry, a manual clock, the journeys (and so the job
//! registry) over them, an admin key and the API router — what each test
//! file used to build by hand.

use std::sync::Arc;

use nachfass::api::{AppState, app};
use nachfass::clock::{Clock, ManualClock};
use nachfass::ingest::Pipeline;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::scoring::StageThresholds;
use nachfass::store::{Scope, Store};

use crate::TempStore;

/// A pipeline with default stage thresholds.
pub fn pipeline(store: Store, registry: Arc<Registry>, clock: Arc<dyn Clock>) -> Pipeline {
    Pipeline {
        store,
        registry,
        clock,
        stages: StageThresholds::default(),
    }
}

/// A host in-process on one database, its clock at a time the test picks.
pub struct TestWorld {
    pub router: axum::Router,
    pub store: Store,
    /// A key with the admin scope.
    pub admin: String,
    pub clock: Arc<ManualClock>,
    pub registry: Arc<Registry>,
    pub journeys: Arc<Journeys>,
    pub temp: TempStore,
}

impl TestWorld {
    /// A world with an empty registry (the runtime with default limits).
    pub async fn start(dialect: &str, now: i64) -> TestWorld {
        TestWorld::with_registry(dialect, now, Arc::new(Registry::new(crate::runtime()))).await
    }

    /// A world whose plugins come from `registry`.
    pub async fn with_registry(dialect: &str, now: i64, registry: Arc<Registry>) -> TestWorld {
        let (store, temp) = crate::store(dialect).await;
        let (_, admin) = store
            .create_api_key("admin", &[Scope::Admin], 0)
            .await
            .expect("an admin key");
        let clock = Arc::new(ManualClock::new(now));
        let pipeline = pipeline(store.clone(), registry.clone(), clock.clone());
        let journeys = Journeys::new(pipeline, Policy::default());
        let router = app(AppState::with_journeys(journeys.clone(), None));
        TestWorld {
            router,
            store,
            admin,
            clock,
            registry,
            journeys,
            temp,
        }
    }

    /// Drops the test's database.
    pub async fn close(self) {
        self.temp.cleanup(self.store).await;
    }
}
