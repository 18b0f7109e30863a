//! Integration tests: the exporter against the in-process simulated sandbox, observed as a user
//! observes it — scraped metrics, HTTP answers, exit codes and log lines.

mod support;

mod appliance;
mod cli;
mod counting;
mod decoding;
mod discovery;
mod docs;
mod errors;
mod faults;
mod flood;
mod health;
mod lifecycle;
mod listeners;
mod openmetrics;
mod pages;
mod persistence;
mod sharding;
mod tls;
