//! The series per client: the busiest by name, the rest summed as `other`.

use super::*;

/// The busiest [`TOP_CLIENTS`] clients by name, the rest summed as `other`.
fn top_clients(clients: &[ClientStatus]) -> Vec<(String, [f64; 4])> {
    let mut out: Vec<(String, [f64; 4])> = Vec::new();
    let mut other = [0.0; 4];
    // `clients` comes busiest first.
    for (i, c) in clients.iter().enumerate() {
        let values = [
            c.granted as f64,
            c.waited_total.as_secs_f64(),
            c.input_tokens as f64,
            c.output_tokens as f64,
        ];
        if i < TOP_CLIENTS {
            out.push((c.id.clone(), values));
        } else {
            for (sum, v) in other.iter_mut().zip(values) {
                *sum += v;
            }
        }
    }
    if clients.len() > TOP_CLIENTS {
        out.push(("other".into(), other));
    }
    out
}

pub(super) fn encode(encoder: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let top = top_clients(&s.clients);
    let labels = |id: &str| vec![("client", id.to_owned())];
    counters(
        encoder,
        "pacer_client_grants",
        "Permits granted to a client (the busiest by name, the rest as `other`)",
        top.iter().map(|(id, v)| (labels(id), v[0])),
    )?;
    counters(
        encoder,
        "pacer_client_wait_seconds",
        "Seconds a client's granted acquires waited, together",
        top.iter().map(|(id, v)| (labels(id), v[1])),
    )?;
    counters(
        encoder,
        "pacer_client_tokens",
        "Tokens a client's settled calls used",
        top.iter().flat_map(|(id, v)| {
            [("input", v[2]), ("output", v[3])].map(|(kind, n)| (with(labels(id), "kind", kind), n))
        }),
    )
}
