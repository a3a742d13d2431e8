//! The fleet demo's summary: what became of every accepted event, the
//! duplicates and whose they are, and the takeover of the killed
//! instance's claims.

use super::*;

/// The run's times, for the summary.
pub(super) struct RunInfo {
    /// When the first event was posted.
    pub(super) started: Instant,
    /// When the dead receiver began to answer 200.
    pub(super) recover_at: Instant,
    /// Why the database could not be read, if so.
    pub(super) db_problem: Option<String>,
}

/// What became of one receiver's actions.
#[derive(Debug, Default)]
pub(super) struct Fate {
    pub(super) delivered: u64,
    pub(super) dead_lettered: u64,
    /// Neither, with the status the store gives.
    pub(super) lost: Vec<(Uuid, String)>,
}

/// The status of `event`'s action for `endpoint`, asked of `url`.
pub(super) async fn action_status(
    client: &reqwest::Client,
    url: &str,
    event: Uuid,
    endpoint: &str,
) -> String {
    let answer = match client
        .get(format!("{url}/events/{event}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) => return format!("unknown ({e})"),
    };
    if answer.status() == StatusCode::NOT_FOUND {
        return "no such event in the store".into();
    }
    let Ok(record) = answer.json::<serde_json::Value>().await else {
        return "unknown (an unreadable answer)".into();
    };
    record["actions"]
        .as_array()
        .and_then(|actions| {
            actions
                .iter()
                .find(|a| a["endpoint"].as_str() == Some(endpoint))
        })
        .and_then(|a| a["status"].as_str())
        .unwrap_or("no such action")
        .to_string()
}

/// Who took over `victim`'s lease, and how many actions it released, from
/// the survivors' logs.
pub(super) fn takeover_in_logs(
    instances: &[Instance],
    victim: &str,
) -> Option<(String, Option<u64>)> {
    let field = format!("instance={victim} ");
    instances
        .iter()
        .filter(|i| i.status == Status::Live)
        .find_map(|i| {
            let text = std::fs::read_to_string(&i.log).ok()?;
            let line = text
                .lines()
                .find(|l| l.contains("lease expired") && format!("{l} ").contains(&field))?;
            let actions = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("actions=")?.parse().ok());
            Some((i.name.clone(), actions))
        })
}

pub(super) async fn summary(
    run: &RunInfo,
    shared: &Shared,
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
    client: &reqwest::Client,
) -> anyhow::Result<bool> {
    let accepted: Vec<Accepted> = lock(&shared.accepted).clone();
    let total = accepted.len() as u64;
    let kill = lock(&shared.kill).take();
    println!();
    println!(
        "summary after {:.1}s: {total} events accepted ({} refused) by {} instances, {} actions",
        run.started.elapsed().as_secs_f64(),
        shared.refused.load(Ordering::Relaxed),
        instances.len(),
        total * receivers.len() as u64,
    );
    for (i, inst) in instances.iter().enumerate() {
        let delivered: Vec<String> = receivers
            .iter()
            .map(|r| format!("{} {}", r.name, inst.delivered(&r.endpoint)))
            .collect();
        let note = match &inst.status {
            Status::Live => String::new(),
            Status::Killed(_) => " (as seen just before the kill)".to_string(),
            Status::Exited(how) => format!(" (it exited on its own: {how})"),
        };
        println!(
            "  {:<8} accepted {} events; delivered {}{note}",
            inst.name,
            shared.by_instance[i].load(Ordering::Relaxed),
            delivered.join(", ")
        );
    }
    let lost = check_actions(&accepted, instances, receivers, ledgers, client).await;
    let victim = kill.as_ref().map_or("the killed instance", |k| {
        instances[k.instance].name.as_str()
    });
    let unexplained = duplicates(kill.as_ref(), victim, receivers, ledgers);
    match &kill {
        Some(k) => takeover(run, k, &accepted, instances, receivers, ledgers),
        None => println!("killed: nobody (the run ended before the kill)"),
    }
    let ok = total > 0 && lost == 0 && kill.is_some();
    let result = if ok {
        format!("ok (nothing lost although {victim} was killed mid-run)")
    } else if kill.is_none() {
        "FAILED (no instance was killed)".to_string()
    } else {
        format!("FAILED ({lost} action(s) lost; see above)")
    };
    if unexplained > 0 {
        println!(
            "WARNING: {unexplained} duplicate(s) of actions {victim} had not claimed: two \
             instances delivered the same action"
        );
    }
    println!("RESULT: {result}");
    Ok(ok)
}

/// Prints what became of every action of every accepted event, by
/// receiver; returns how many were lost.
pub(super) async fn check_actions(
    accepted: &[Accepted],
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
    client: &reqwest::Client,
) -> u64 {
    let total = accepted.len() as u64;
    let accepted_ids: HashSet<Uuid> = accepted.iter().map(|a| a.id).collect();
    let survivor = instances.iter().find(|i| i.status == Status::Live);
    let mut fates = Vec::new();
    let mut foreign = 0u64;
    for (r, ledger) in receivers.iter().zip(ledgers) {
        let delivered = ledger.delivered();
        foreign += delivered.difference(&accepted_ids).count() as u64;
        let mut fate = Fate::default();
        for a in accepted {
            if delivered.contains(&a.id) {
                fate.delivered += 1;
                continue;
            }
            let status = match survivor {
                Some(s) => action_status(client, &s.url, a.id, &r.endpoint).await,
                None => "unknown (no instance left to ask)".into(),
            };
            if status == "dead_lettered" {
                fate.dead_lettered += 1;
            } else {
                fate.lost.push((a.id, status));
            }
        }
        let t = ledger.tally();
        println!(
            "  {:<8} {}/{total} delivered, {} dead-lettered, {} lost; {} requests, {} errors, {} \
             duplicate(s)",
            r.name,
            fate.delivered,
            fate.dead_lettered,
            fate.lost.len(),
            t.requests,
            t.errors,
            t.duplicates,
        );
        for (id, status) in fate.lost.iter().take(5) {
            println!("           lost: event {id}, its action is {status}");
        }
        fates.push(fate);
    }
    let delivered: u64 = fates.iter().map(|f| f.delivered).sum();
    let dead: u64 = fates.iter().map(|f| f.dead_lettered).sum();
    let lost: u64 = fates.iter().map(|f| f.lost.len() as u64).sum();
    println!(
        "actions: {}/{} delivered or dead-lettered, {lost} lost ({delivered} delivered, {dead} \
         dead-lettered)\n  checked by webhook-id at the receivers{}",
        delivered + dead,
        total * receivers.len() as u64,
        if dead + lost > 0 {
            ", then by GET /events/{id} on a survivor"
        } else {
            ""
        }
    );
    let unsigned: u64 = ledgers
        .iter()
        .map(|l| l.unsigned.load(Ordering::Relaxed))
        .sum();
    if foreign + unsigned > 0 {
        println!(
            "WARNING: the receivers got {foreign} action(s) of events never accepted and \
             {unsigned} request(s) without a webhook-id"
        );
    }
    lost
}

/// Prints the duplicates at the receivers and whose they are; returns how
/// many were not the killed instance's in-flight work.
pub(super) fn duplicates(
    kill: Option<&Kill>,
    victim: &str,
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
) -> u64 {
    let claims: HashSet<(Uuid, &str)> = kill
        .and_then(|k| k.claims.as_ref().ok())
        .map(|c| c.iter().map(|c| (c.event, c.endpoint.as_str())).collect())
        .unwrap_or_default();
    let mut duplicates = 0u64;
    let mut explained = 0u64;
    for (r, ledger) in receivers.iter().zip(ledgers) {
        for (event, hits) in ledger.by_event() {
            let extra = (hits.iter().filter(|h| h.ok).count() as u64).saturating_sub(1);
            duplicates += extra;
            if claims.contains(&(event, r.endpoint.as_str())) {
                explained += extra;
            }
        }
    }
    if duplicates == 0 {
        println!(
            "duplicates: none; no webhook-id was answered 2xx twice (a duplicate would be work \
             {victim}\n  had sent but not yet recorded as delivered when it died)"
        );
    } else {
        println!(
            "duplicates: {duplicates} (2xx answers beyond the first per webhook-id), {explained} \
             of them of actions\n  {victim} had claimed when it was killed: its in-flight work, \
             sent before it died but not\n  yet recorded as delivered, so delivered again by the \
             instance that took it over"
        );
    }
    duplicates - explained
}

/// Prints the kill, how long after it the killed instance's claims were
/// delivered by the others, and when every event accepted before it had
/// reached each receiver.
pub(super) fn takeover(
    run: &RunInfo,
    k: &Kill,
    accepted: &[Accepted],
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
) {
    let name = &instances[k.instance].name;
    let receiver_of = |endpoint: &str| receivers.iter().position(|r| r.endpoint == endpoint);
    let by_event: Vec<HashMap<Uuid, Vec<Hit>>> = ledgers.iter().map(|l| l.by_event()).collect();
    let mut measured = false;
    match &k.claims {
        Ok(claims) => {
            let mut per = vec![0usize; receivers.len()];
            for r in claims.iter().filter_map(|c| receiver_of(&c.endpoint)) {
                per[r] += 1;
            }
            let split: Vec<String> = receivers
                .iter()
                .zip(&per)
                .map(|(r, n)| format!("{n} {}", r.name))
                .collect();
            println!(
                "killed: {name} with SIGKILL at {}, after accepting {} events; it held {} claimed \
                 action(s):\n  {}",
                secs(after(run.started, k.at)),
                k.accepted,
                claims.len(),
                split.join(", ")
            );
            // When a survivor first delivered each claimed action.
            let gasp = k.at + LAST_GASP;
            let mut first: Option<Duration> = None;
            let mut last_by: Vec<Option<Duration>> = vec![None; receivers.len()];
            let mut undelivered = 0usize;
            for c in claims {
                let Some(r) = receiver_of(&c.endpoint) else {
                    continue;
                };
                let delivered = by_event[r].get(&c.event).and_then(|hits| {
                    hits.iter()
                        .find(|h| h.ok && h.at > gasp)
                        .map(|h| after(k.at, h.at))
                });
                match delivered {
                    Some(d) => {
                        first = Some(first.map_or(d, |f| f.min(d)));
                        last_by[r] = Some(last_by[r].map_or(d, |l| l.max(d)));
                    }
                    None => undelivered += 1,
                }
            }
            let released = match takeover_in_logs(instances, name) {
                Some((who, Some(n))) => {
                    format!(";\n  {who} released {name}'s {n} claim(s), says {who}'s log")
                }
                Some((who, None)) => format!(";\n  {who} released {name}'s claims, says its log"),
                None => String::new(),
            };
            match first {
                Some(first) => {
                    measured = true;
                    let lasts: Vec<String> = receivers
                        .iter()
                        .zip(&last_by)
                        .filter_map(|(r, l)| {
                            l.map(|l| format!("{} {:.2}s", r.name, l.as_secs_f64()))
                        })
                        .collect();
                    println!(
                        "takeover: a survivor delivered the first of them {:.2}s after the kill \
                         (lease {},\n  heartbeat {}); the last of them, by receiver: {} after \
                         the kill{}{released}",
                        first.as_secs_f64(),
                        secs(Duration::from_millis(LEASE_MS)),
                        secs(Duration::from_millis(HEARTBEAT_MS)),
                        lasts.join(", "),
                        if undelivered > 0 {
                            format!("; {undelivered} never delivered after the kill")
                        } else {
                            String::new()
                        }
                    );
                }
                None if claims.is_empty() => println!(
                    "takeover: {name} held no claimed action when it was killed: nothing to take \
                     over{released}"
                ),
                None => println!(
                    "takeover: none of {name}'s {} claimed action(s) was delivered after the kill",
                    claims.len()
                ),
            }
        }
        Err(e) => println!(
            "killed: {name} with SIGKILL at {}, after accepting {} events; what it held could \
             not be read from the database ({e})",
            secs(after(run.started, k.at)),
            k.accepted
        ),
    }
    // The coarser measure: when every event accepted before the kill had
    // reached each receiver.
    let before: Vec<Uuid> = accepted
        .iter()
        .filter(|a| a.at <= k.at)
        .map(|a| a.id)
        .collect();
    let caught_up: Vec<String> = receivers
        .iter()
        .zip(&by_event)
        .map(|(r, events)| {
            let last = before.iter().try_fold(None, |last: Option<Instant>, id| {
                let ok = events.get(id)?.iter().find(|h| h.ok)?.at;
                Some(Some(last.map_or(ok, |l| l.max(ok))))
            });
            match last {
                Some(Some(t)) if t > k.at => {
                    format!("{} {:.2}s", r.name, after(k.at, t).as_secs_f64())
                }
                Some(_) => format!("{} before the kill", r.name),
                None => format!("{} never", r.name),
            }
        })
        .collect();
    println!(
        "caught up: all {} events accepted before the kill had reached each receiver by:\n  {} \
         after the kill\n  (the dead receiver answered 503 until {} after it)",
        before.len(),
        caught_up.join(", "),
        secs(run.recover_at.saturating_duration_since(k.at)),
    );
    if !measured {
        println!("  (the takeover could not be measured from the claims: this is its upper bound)");
    }
    if let Some(problem) = &run.db_problem {
        println!("  (the database could not be read: {problem})");
    }
}
