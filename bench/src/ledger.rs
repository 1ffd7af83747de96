//! `souk-bench ledger`: durable gifts per second through the ledger, on SQLite and
//! PostgreSQL, with many senders at once, and the latency of each commit.
//!
//! It drives `souk_commerce::Ledger` in this process against a fresh database: what is
//! measured is the store's exact path (idempotency key, two wallet updates, entries, the
//! gift row, one commit), without the WebSocket in front.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use souk_commerce::Ledger;
use souk_proto::commerce::Gift;
use souk_store::scratch::PgScratch;
use souk_store::{Db, SqliteSync};
use tokio::sync::Notify;

#[derive(Parser)]
pub struct LedgerBench {
    /// Concurrent senders.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also run on a fresh database on this PostgreSQL.
    #[arg(long)]
    postgres: Option<String>,
    /// `normal` or `full` (fsync at every commit) for SQLite.
    #[arg(long, default_value = "normal")]
    sqlite_sync: String,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

async fn run(name: &str, db: Db, args: &LedgerBench) -> anyhow::Result<()> {
    let ledger = Arc::new(
        Ledger::open(db, false, Arc::new(Notify::new()))
            .await
            .map_err(anyhow::Error::msg)?,
    );
    ledger.start_group_commit();
    ledger
        .put_gift(&Gift {
            gift_id: "rose".into(),
            name: "Rose".into(),
            price_minor: 1,
            currency: "USD".into(),
        })
        .await
        .map_err(anyhow::Error::msg)?;
    for s in 0..args.senders {
        ledger
            .top_up(
                &format!("load-{s}"),
                &format!("fan-{s}"),
                1_000_000_000,
                "USD",
                0,
            )
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for s in 0..args.senders {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            let mut k = 0u64;
            while Instant::now() < deadline {
                k += 1;
                let t = Instant::now();
                // Ten hosts, so wallets contend the way a busy room's do.
                let host = format!("host-{}", k % 10);
                match ledger
                    .send_gift(
                        &format!("g-{s}-{k}"),
                        "bench",
                        &format!("fan-{s}"),
                        &host,
                        "rose",
                        1,
                        1,
                    )
                    .await
                {
                    Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(_) => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await?;
        all.extend(l);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let balanced = ledger.audit().await.map_err(anyhow::Error::msg)?.is_ok();
    println!(
        "| {name} | {} | {} | {:.0} | {:.1} | {:.1} | {failed} | {balanced} |",
        args.senders,
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    );
    Ok(())
}

pub async fn ledger(args: LedgerBench) -> anyhow::Result<()> {
    println!("| store | senders | gifts committed | gifts/s | commit p50 ms | commit p99 ms | failed | books balance |");
    println!("|---|---|---|---|---|---|---|---|");
    let dir = std::env::temp_dir().join(format!("souk-bench-ledger-{}", std::process::id()));
    let sync = if args.sqlite_sync == "full" {
        SqliteSync::Full
    } else {
        SqliteSync::Normal
    };
    let db = Db::open_sqlite(&dir.join("ledger.db"), sync).await?;
    run(&format!("SQLite ({})", args.sqlite_sync), db, &args).await?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(base) = &args.postgres {
        let scratch = PgScratch::create(base, "souk_bench_ledger").map_err(anyhow::Error::msg)?;
        let db = Db::open(&scratch.url(), SqliteSync::Normal).await?;
        run("PostgreSQL", db.clone(), &args).await?;
        db.close().await;
    }
    Ok(())
}
