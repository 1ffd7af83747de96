//! `souk-bench ledger`: durable gifts (or flash-sale purchases) per second through the
//! ledger, on SQLite and PostgreSQL, with many senders at once, and the latency of each
//! commit.
//!
//! It drives `souk_commerce::Ledger` in this process against a fresh database: what is
//! measured is the store's exact path (idempotency key, two wallet updates, entries, the
//! gift or order row, one commit), without the WebSocket in front.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use souk_commerce::Ledger;
use souk_proto::commerce::{Gift, Sale};
use souk_store::scratch::PgScratch;
use souk_store::{Backend, Db, SqliteSync};
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
    /// What each sender does, one after another.
    #[arg(long, value_enum, default_value_t = Op::Gift)]
    op: Op,
    /// Apply SQLite's requests in shared transactions (as `souk serve` does), or one by one.
    #[arg(long, default_value = "on")]
    group_commit: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    /// A gift to one of ten hosts, so wallets contend the way a busy room's do.
    Gift,
    /// One unit from a flash sale that every sender buys from.
    Purchase,
}

async fn set_up(ledger: &Ledger, senders: usize) -> Result<(), souk_proto::ProtoError> {
    ledger
        .put_gift(&Gift {
            gift_id: "rose".into(),
            name: "Rose".into(),
            price_minor: 1,
            currency: "USD".into(),
        })
        .await?;
    ledger
        .create_sale(&Sale {
            sale_id: "drop".into(),
            room: "bench".into(),
            product_id: "sneaker".into(),
            title: "Sneaker".into(),
            price_minor: 1,
            currency: "USD".into(),
            stock: 1_000_000_000,
            sold: 0,
            per_buyer_limit: 1_000_000_000,
            starts_at_ms: 0,
            ends_at_ms: u64::MAX / 2,
        })
        .await?;
    for s in 0..senders {
        ledger
            .top_up(
                &format!("load-{s}"),
                &format!("fan-{s}"),
                1_000_000_000,
                "USD",
                0,
            )
            .await?;
    }
    Ok(())
}

/// One request of `op` by sender `s`, its `k`th.
async fn request(ledger: &Ledger, op: Op, s: usize, k: u64) -> Result<(), souk_proto::ProtoError> {
    let (key, sender) = (format!("r-{s}-{k}"), format!("fan-{s}"));
    match op {
        Op::Gift => {
            let host = format!("host-{}", k % 10);
            ledger
                .send_gift(&key, "bench", &sender, &host, "rose", 1, 1)
                .await
                .map(drop)
        }
        Op::Purchase => ledger
            .buy(&key, "bench", "drop", &sender, 1, 1)
            .await
            .map(drop),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

async fn run(name: &str, db: Db, args: &LedgerBench) -> anyhow::Result<()> {
    // Only SQLite's single writer groups commits.
    let grouped = if db.backend() == Backend::Sqlite {
        args.group_commit.as_str()
    } else {
        "n/a"
    };
    let ledger = Arc::new(
        Ledger::open(db, false, Arc::new(Notify::new()))
            .await
            .map_err(anyhow::Error::msg)?,
    );
    if args.group_commit == "on" {
        ledger.start_group_commit();
    }
    set_up(&ledger, args.senders)
        .await
        .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for s in 0..args.senders {
        let (ledger, op) = (ledger.clone(), args.op);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            let mut k = 0u64;
            while Instant::now() < deadline {
                k += 1;
                let t = Instant::now();
                match request(&ledger, op, s, k).await {
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
        "| {name} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {failed} | {balanced} |",
        grouped,
        args.senders,
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    );
    Ok(())
}

pub async fn ledger(args: LedgerBench) -> anyhow::Result<()> {
    let what = match args.op {
        Op::Gift => "gifts",
        Op::Purchase => "purchases",
    };
    println!("| store | group commit | senders | {what} committed | {what}/s | commit p50 ms | commit p99 ms | failed | books balance |");
    println!("|---|---|---|---|---|---|---|---|---|");
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
