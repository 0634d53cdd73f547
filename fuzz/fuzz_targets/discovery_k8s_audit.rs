//! Reads arbitrary bytes as `Format::KubernetesAudit`: nothing may panic, and records are numbered
//! in file order.

#![no_main]

use custos_core::discovery::Format;
use libfuzzer_sys::fuzz_target;

#[path = "discovery_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::check(Format::KubernetesAudit, data));
