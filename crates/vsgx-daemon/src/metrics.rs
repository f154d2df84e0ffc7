//! `GET /metrics`: Prometheus text exposition of the host's and the domains' EPC.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use vsgx_isa::leaf::Encls;

use crate::{Shared, lock};

/// Prometheus text: EPC per section and per domain.
pub(crate) async fn metrics(State(state): State<Shared>) -> Response {
    use std::fmt::Write;
    let daemon = lock(&state);
    let host = &daemon.host;
    let stats = host.epc().stats();
    let mut out = String::new();
    let mut family = |kind: &str, name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, u64)>| family("gauge", name, help, rows);
    let section = |i: usize, node: u32| format!("{{section=\"{i}\",node=\"{node}\"}}");
    let sections = &stats.per_section;
    gauge(
        "vsgx_epc_section_bytes",
        "Size of each physical EPC section.",
        sections.iter().enumerate().map(|(i, s)| (section(i, s.node), s.size)).collect(),
    );
    gauge(
        "vsgx_epc_section_free_pages",
        "Free pages of each physical EPC section.",
        sections.iter().enumerate().map(|(i, s)| (section(i, s.node), s.free)).collect(),
    );
    let info = host.sgxinfo();
    gauge("vsgx_epc_free_bytes", "EPC given to no one.", vec![(String::new(), info.epc_free_bytes)]);
    gauge(
        "vsgx_epc_used_bytes",
        "EPC backing vEPC or held by the hypervisor.",
        vec![(String::new(), info.epc_used_bytes)],
    );
    gauge("vsgx_epc_quarantined_bytes", "EPC taken out of service.", vec![(String::new(), info.epc_quarantined_bytes)]);
    let entries = host.sgxlist(None).unwrap_or_default();
    let domain = |e: &vsgx_toolstack::report::SgxListEntry| format!("{{domain=\"{}\",domid=\"{}\"}}", e.name, e.domid);
    for (name, help, field) in [
        ("vsgx_domain_epc_resident_pages", "vEPC pages backed by EPC.", 0),
        ("vsgx_domain_epc_evicted_pages", "vEPC pages the host evicted.", 1),
        ("vsgx_domain_epc_ballooned_pages", "vEPC pages ballooned out.", 2),
    ] {
        let rows = entries
            .iter()
            .map(|e| (domain(e), [e.resident_pages, e.evicted_pages, e.ballooned_pages][field]))
            .collect();
        gauge(name, help, rows);
    }
    let guests: Vec<_> = host.guests().collect();
    let label = |g: &vsgx_toolstack::lifecycle::Guest| format!("domain=\"{}\",domid=\"{}\"", g.config.name, g.id.0);
    gauge(
        "vsgx_domain_guest_running",
        "1 while the domain's SGX guest runs on its vCPU 0 (0: stopped, or no vEPC).",
        guests
            .iter()
            .map(|g| {
                (format!("{{{}}}", label(g)), u64::from(daemon.vms.get(&g.id.0).is_some_and(|r| r.vm.is_running())))
            })
            .collect(),
    );
    let exits = [Encls::Ecreate, Encls::Einit]
        .into_iter()
        .flat_map(|leaf| {
            guests.iter().map(move |g| {
                (format!("{{{},leaf=\"{}\"}}", label(g), leaf.name()), g.domain().shared().exits.get(leaf))
            })
        })
        .collect();
    family(
        "counter",
        "vsgx_domain_encls_exits_total",
        "ENCLS leaves the hypervisor trapped and emulated for the domain (ECREATE, EINIT).",
        exits,
    );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
