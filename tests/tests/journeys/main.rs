//! Journeys walked with an injected clock through their branches, goals,
//! send windows, frequency cap, unsubscribes, tracking, privacy rights and
//! KPIs, on SQLite and PostgreSQL. Messages go through the real webhook
//! component to a real HTTP receiver on 127.0.0.1. One file per topic;
//! `world.rs` holds what they share.

#![allow(clippy::unwrap_used)]

mod delivery;
mod kpis;
mod privacy;
mod rate;
mod ready_made;
mod routing;
mod tracking;
mod world;
