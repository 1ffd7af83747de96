//! The ledger on SQLite and PostgreSQL: behaviour, bad input, and a property over random
//! concurrent interleavings of gifts, retries, reused keys, coupon claims and purchases.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use souk_commerce::Ledger;
use souk_proto::commerce::{Coupon, Gift, Sale};
use souk_proto::ErrorCode;
use souk_store::scratch::{postgres_base, PgScratch};
use souk_store::{Db, SqliteSync};
use tokio::sync::Notify;

const NOW: u64 = 1_800_000_000_000;

/// A ledger on a fresh database of each kind; the guard keeps it alive.
async fn ledgers() -> Vec<(&'static str, Arc<Ledger>, Box<dyn std::any::Any>)> {
    let dir = std::env::temp_dir().join(format!(
        "souk-ledger-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let sqlite = Db::open_sqlite(&dir.join("l.db"), SqliteSync::Normal)
        .await
        .unwrap();
    let pg = PgScratch::create(&postgres_base(), "souk_ledger").expect("PostgreSQL for tests");
    let postgres = Db::open(&pg.url(), SqliteSync::Normal).await.unwrap();
    let mut out: Vec<(&'static str, Arc<Ledger>, Box<dyn std::any::Any>)> = Vec::new();
    for (name, db, guard) in [
        (
            "sqlite",
            sqlite,
            Box::new(TempDir(dir)) as Box<dyn std::any::Any>,
        ),
        ("postgres", postgres, Box::new(pg)),
    ] {
        let ledger = Arc::new(
            Ledger::open(db, false, Arc::new(Notify::new()))
                .await
                .unwrap(),
        );
        // Gifts and purchases on SQLite go through the group-commit writer, as in the server.
        ledger.start_group_commit();
        out.push((name, ledger, guard));
    }
    out
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, souk_proto::ProtoError>) -> ErrorCode {
    r.expect_err("refused").code
}

async fn rose(ledger: &Ledger) {
    ledger
        .put_gift(&Gift {
            gift_id: "rose".into(),
            name: "Rose".into(),
            price_minor: 100,
            currency: "USD".into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gifts_move_money_exactly_once_and_refuse_bad_input() {
    for (backend, ledger, _guard) in ledgers().await {
        rose(&ledger).await;
        ledger.top_up("t1", "vic", 1_000, "USD", NOW).await.unwrap();
        // The same top-up retried is applied once.
        let again = ledger.top_up("t1", "vic", 1_000, "USD", NOW).await.unwrap();
        assert_eq!(again.balance_minor, 1_000, "{backend}");
        assert_eq!(
            code(ledger.top_up("t1", "vic", 5, "USD", NOW).await),
            ErrorCode::IdempotencyConflict
        );

        let sent = ledger
            .send_gift("g1", "live", "vic", "hana", "rose", 3, NOW)
            .await
            .unwrap()
            .value;
        assert_eq!(
            (sent.amount_minor, sent.balance_minor),
            (300, 700),
            "{backend}"
        );
        let retry = ledger
            .send_gift("g1", "live", "vic", "hana", "rose", 3, NOW)
            .await
            .unwrap();
        assert!(retry.replayed);
        assert_eq!(retry.value, sent, "a retry returns the first answer");
        assert_eq!(
            code(
                ledger
                    .send_gift("g1", "live", "vic", "hana", "rose", 4, NOW)
                    .await
            ),
            ErrorCode::IdempotencyConflict
        );
        assert_eq!(
            ledger.balance("hana", "USD").await.unwrap().balance_minor,
            300
        );

        // Refusals, each with its code; none moves money.
        for (key, to, gift, count, expected) in [
            ("g2", "hana", "rose", 8, ErrorCode::InsufficientFunds),
            ("g3", "hana", "tank", 1, ErrorCode::GiftNotFound),
            ("g4", "vic", "rose", 1, ErrorCode::InvalidRequest),
            ("g5", "hana", "rose", 0, ErrorCode::InvalidRequest),
        ] {
            let refused = ledger
                .send_gift(key, "live", "vic", to, gift, count, NOW)
                .await;
            assert_eq!(code(refused), expected, "{backend} {key}");
        }
        assert_eq!(
            code(ledger.top_up("t2", "vic", -5, "USD", NOW).await),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(ledger.top_up("t3", "vic", i64::MAX, "USD", NOW).await),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(ledger.top_up("t4", "vic", 5, "usd", NOW).await),
            ErrorCode::InvalidRequest
        );
        // A failed gift leaves its key free for a real retry once funds arrive.
        ledger.top_up("t5", "vic", 100, "USD", NOW).await.unwrap();
        ledger
            .send_gift("g2", "live", "vic", "hana", "rose", 8, NOW)
            .await
            .unwrap();

        let board = ledger.leaderboard("live", 10).await.unwrap();
        assert_eq!(
            (board[0].host.as_str(), board[0].total_minor),
            ("hana", 1_100)
        );
        ledger
            .refund("r1", "hana", 1_000, "USD", NOW)
            .await
            .unwrap();
        assert_eq!(
            code(ledger.refund("r2", "hana", 1_000, "USD", NOW).await),
            ErrorCode::InsufficientFunds
        );
        assert_eq!(ledger.audit().await.unwrap(), Ok(()), "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupons_sales_and_battles() {
    for (backend, ledger, _guard) in ledgers().await {
        rose(&ledger).await;
        let coupon = Coupon {
            coupon_id: "c1".into(),
            room: "live".into(),
            quantity: 2,
            claimed: 0,
            value_minor: 500,
            currency: "EUR".into(),
        };
        ledger.issue_coupon(&coupon).await.unwrap();
        assert_eq!(
            ledger
                .claim_coupon("live", "c1", "ana", NOW)
                .await
                .unwrap()
                .remaining,
            1
        );
        assert_eq!(
            code(ledger.claim_coupon("live", "c1", "ana", NOW).await),
            ErrorCode::CouponAlreadyClaimed,
            "{backend}"
        );
        ledger.claim_coupon("live", "c1", "bo", NOW).await.unwrap();
        assert_eq!(
            code(ledger.claim_coupon("live", "c1", "cy", NOW).await),
            ErrorCode::CouponExhausted
        );
        assert_eq!(
            code(ledger.claim_coupon("live", "nope", "cy", NOW).await),
            ErrorCode::CouponNotFound
        );

        let sale = Sale {
            sale_id: "s1".into(),
            room: "live".into(),
            product_id: "tote".into(),
            title: "Tote".into(),
            price_minor: 250,
            currency: "USD".into(),
            stock: 3,
            sold: 0,
            per_buyer_limit: 2,
            starts_at_ms: NOW,
            ends_at_ms: NOW + 60_000,
        };
        ledger.create_sale(&sale).await.unwrap();
        ledger
            .top_up("t-ana", "ana", 10_000, "USD", NOW)
            .await
            .unwrap();
        ledger
            .top_up("t-bo", "bo", 10_000, "USD", NOW)
            .await
            .unwrap();
        assert_eq!(
            code(ledger.buy("b0", "live", "s1", "ana", 1, NOW - 1).await),
            ErrorCode::SaleNotActive
        );
        let order = ledger.buy("b1", "live", "s1", "ana", 2, NOW).await.unwrap();
        assert_eq!((order.value.amount_minor, order.replayed), (500, false));
        let again = ledger.buy("b1", "live", "s1", "ana", 2, NOW).await.unwrap();
        assert_eq!(
            (again.value, again.replayed),
            (order.value, true),
            "retry, same order"
        );
        assert_eq!(
            code(ledger.buy("b2", "live", "s1", "ana", 1, NOW).await),
            ErrorCode::PurchaseLimit
        );
        assert_eq!(
            code(ledger.buy("b3", "live", "s1", "bo", 2, NOW).await),
            ErrorCode::SoldOut
        );
        ledger.buy("b4", "live", "s1", "bo", 1, NOW).await.unwrap();
        assert_eq!(ledger.sale("s1").await.unwrap().sold, 3);
        assert_eq!(
            code(ledger.buy("b5", "live", "s1", "bo", 1, NOW + 60_000).await),
            ErrorCode::SaleNotActive
        );

        let battle = ledger
            .start_battle("live", ["hana", "ivo"], 10_000, NOW)
            .await
            .unwrap();
        ledger
            .send_gift("g", "live", "ana", "ivo", "rose", 2, NOW + 1)
            .await
            .unwrap();
        let done = ledger
            .battle(&battle.battle_id, NOW + 10_000)
            .await
            .unwrap();
        assert_eq!(done.scores_minor, [0, 200]);
        assert_eq!(done.winner.as_deref(), Some("ivo"));
        assert_eq!(ledger.audit().await.unwrap(), Ok(()), "{backend}");
    }
}

/// Random concurrent interleavings: the books balance, nobody spends what they lack,
/// stock and per-buyer limits hold, and each key moves money at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_the_books_exact() {
    const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
    for (backend, ledger, _guard) in ledgers().await {
        rose(&ledger).await;
        ledger
            .issue_coupon(&Coupon {
                coupon_id: "cp".into(),
                room: "live".into(),
                quantity: 5,
                claimed: 0,
                value_minor: 100,
                currency: "USD".into(),
            })
            .await
            .unwrap();
        ledger
            .create_sale(&Sale {
                sale_id: "fs".into(),
                room: "live".into(),
                product_id: "p".into(),
                title: "P".into(),
                price_minor: 150,
                currency: "USD".into(),
                stock: 7,
                sold: 0,
                per_buyer_limit: 3,
                starts_at_ms: NOW,
                ends_at_ms: NOW + 60_000,
            })
            .await
            .unwrap();
        for seed in 0..4u64 {
            let mut tasks = Vec::new();
            for worker in 0..4u64 {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed * 100 + worker);
                    let mut done = 0;
                    for step in 0..40 {
                        let me = USERS[rng.gen_range(0..USERS.len())];
                        // Keys repeat on purpose, across workers too, to race retries.
                        let key = format!("k{seed}-{}", rng.gen_range(0..30));
                        let _ = match rng.gen_range(0..6) {
                            0 => ledger
                                .top_up(
                                    &format!("top-{seed}-{worker}-{step}"),
                                    me,
                                    rng.gen_range(1..400),
                                    "USD",
                                    NOW,
                                )
                                .await
                                .map(|_| ()),
                            1 | 2 => {
                                let host = USERS[rng.gen_range(0..USERS.len())];
                                ledger
                                    .send_gift(
                                        &key,
                                        "live",
                                        me,
                                        host,
                                        "rose",
                                        rng.gen_range(1..4),
                                        NOW,
                                    )
                                    .await
                                    .map(|_| ())
                            }
                            3 => ledger.claim_coupon("live", "cp", me, NOW).await.map(|_| ()),
                            4 => ledger
                                .buy(&key, "live", "fs", me, rng.gen_range(1..3), NOW)
                                .await
                                .map(|_| ()),
                            _ => ledger
                                .refund(
                                    &format!("ref-{seed}-{worker}-{step}"),
                                    me,
                                    rng.gen_range(1..200),
                                    "USD",
                                    NOW,
                                )
                                .await
                                .map(|_| ()),
                        }
                        .map(|()| done += 1);
                    }
                    done
                }));
            }
            let mut successes = 0;
            for t in tasks {
                successes += t.await.unwrap();
            }
            assert!(successes > 0, "{backend} seed {seed}: something succeeded");
            assert_eq!(
                ledger.audit().await.unwrap(),
                Ok(()),
                "{backend} seed {seed}"
            );
            let sale = ledger.sale("fs").await.unwrap();
            assert!(
                (0..=sale.stock).contains(&sale.sold),
                "{backend}: sold {} of {}",
                sale.sold,
                sale.stock
            );
        }
        // Per-buyer and coupon limits, read straight from the books.
        for user in USERS {
            let b = ledger.balance(user, "USD").await.unwrap();
            assert!(b.balance_minor >= 0, "{backend}: {user} overspent");
        }
        let sale = ledger.sale("fs").await.unwrap();
        let buyers = ledger.buyers("fs").await.unwrap();
        assert!(
            buyers.iter().all(|(_, q)| *q <= sale.per_buyer_limit),
            "{backend}: {buyers:?}"
        );
        assert_eq!(
            buyers.iter().map(|(_, q)| q).sum::<i64>(),
            sale.sold,
            "{backend}"
        );
        let coupon = ledger.coupon("cp").await.unwrap();
        assert!(coupon.claimed <= coupon.quantity, "{backend}");
        // Every unit sold was paid for exactly once: merchant revenue = sold × price.
        let revenue = ledger.merchant_revenue("USD").await.unwrap();
        assert_eq!(revenue, sale.sold * sale.price_minor, "{backend}");
    }
}
