//! Keeps the etcd client's endpoints to the members that answer.
//!
//! etcd-client balances requests over every endpoint it was given, dead or alive, so with one
//! member down a share of requests would fail (etcdv3/etcd-client#39). A monitor probes each
//! member on its own connection and takes dead ones out of the balance until they answer again.
//! When none answers, all stay in, so that requests fail with etcd's own error.
//!
//! The same probes say which member leads: the gateway sends its requests to the leader on
//! that member's own connection (a follower would forward each proposal to it, one more hop),
//! and to the balanced client while no leader is known. Each member's client sends its unary
//! calls through a [`MemberChannel`] (one write per call, one connection per thread) unless
//! etcd is reached over TLS.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Channel, Client, ConnectOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tower::util::BoxCloneSyncService;
use tracing::{info, warn};

use super::member_channel::MemberChannel;
use super::{CALL_TIMEOUT, CONNECT_TIMEOUT, KEEP_ALIVE};

/// How often each member is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long a member has to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs for the gateway's life, adding and removing `client`'s endpoints as members come and go,
/// and keeping `leader` to the leading member's URL and a client of it alone.
pub(super) async fn monitor(
    client: Client,
    leader: Arc<watch::Sender<Option<(String, Client)>>>,
    endpoints: Vec<String>,
    options: ConnectOptions,
    plain: bool,
) {
    if endpoints.len() < 2 {
        return;
    }
    let mut probes = Vec::new();
    for endpoint in &endpoints {
        match member_client(endpoint, &options, plain).await {
            Ok(probe) => probes.push((endpoint.clone(), probe)),
            Err(error) => warn!(%endpoint, %error, "cannot probe this etcd endpoint; it stays in use"),
        }
    }
    let mut in_use = vec![true; probes.len()];
    for round in 0.. {
        if round > 0 {
            sleep(PROBE_EVERY).await;
        }
        let mut answers = JoinSet::new();
        for (index, (_, probe)) in probes.iter().enumerate() {
            let mut probe = probe.clone();
            answers.spawn(async move {
                match timeout(PROBE_TIMEOUT, probe.status()).await {
                    Ok(Ok(status)) => {
                        let member = status.header().map_or(0, |header| header.member_id());
                        (index, true, status.leader() == member && member != 0)
                    }
                    _ => (index, false, false),
                }
            });
        }
        let mut alive = vec![false; probes.len()];
        let mut leading = None;
        while let Some(Ok((index, answered, leads))) = answers.join_next().await {
            alive[index] = answered;
            if leads {
                leading = Some(probes[index].clone());
            }
        }
        leader.send_if_modified(|known| {
            let changed = known.as_ref().map(|(url, _)| url) != leading.as_ref().map(|(url, _)| url);
            if changed {
                *known = leading;
            }
            changed
        });
        let wanted = if alive.iter().any(|alive| *alive) { alive } else { vec![true; probes.len()] };
        for (index, (endpoint, _)) in probes.iter().enumerate() {
            let changed = match (in_use[index], wanted[index]) {
                (true, false) => client
                    .remove_endpoint(endpoint)
                    .await
                    .map(|_| warn!(%endpoint, "etcd member not answering; taken out of use")),
                (false, true) => client
                    .add_endpoint(endpoint)
                    .await
                    .map(|_| info!(%endpoint, "etcd member answering again; back in use")),
                _ => continue,
            };
            if changed.is_ok() {
                in_use[index] = wanted[index];
            }
        }
    }
}

/// A client of the member at `endpoint` alone: through a [`MemberChannel`] when etcd is reached
/// in plain text (`plain`), else through etcd-client's own channel.
async fn member_client(
    endpoint: &str,
    options: &ConnectOptions,
    plain: bool,
) -> Result<Client, etcd_client::Error> {
    let channel =
        plain.then(|| MemberChannel::new(endpoint, KEEP_ALIVE, CALL_TIMEOUT, CONNECT_TIMEOUT)).flatten();
    match channel {
        Some(channel) => {
            Client::from_channel(Channel::Custom(BoxCloneSyncService::new(channel)), Some(options.clone()))
                .await
        }
        None => Client::connect([endpoint], Some(options.clone())).await,
    }
}
