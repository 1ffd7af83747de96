use std::sync::{Arc, OnceLock};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use souk_proto::commerce::{
    Balance, Battle, Coupon, CouponClaimed, Gift, GiftSent, LeaderboardEntry, Order, Sale,
    WalletTxn, MAX_AMOUNT_MINOR, MAX_GIFT_COUNT, MAX_IDEMPOTENCY_KEY_BYTES,
};
use souk_proto::token::{validate_name, MAX_IDENTITY_BYTES};
use souk_proto::{ErrorCode, ProtoError};
use souk_store::{int, text, Any, Backend, Db, StoreError, Transaction};
use tokio::sync::{mpsc, oneshot, Notify};

/// Money collected by the merchant's backend and loaded into wallets.
const EXTERNAL: &str = "external:payments";
/// Revenue from flash-sale purchases.
const MERCHANT: &str = "merchant:sales";
/// The actor whose idempotency keys the merchant's backend uses (top-ups, refunds).
const BACKEND: &str = "backend";
/// The outbox topic of new orders, for the merchant's webhook.
pub const ORDER_TOPIC: &str = "order.created";

type Result<T> = std::result::Result<T, ProtoError>;
type Tx = Transaction<'static, Any>;

fn internal(e: impl Into<StoreError>) -> ProtoError {
    let e = e.into();
    tracing::error!("ledger store: {e}");
    ProtoError::new(
        ErrorCode::Internal,
        "the ledger store failed; no money moved, retry with the same idempotency key",
    )
}

fn invalid(why: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidRequest, why)
}

fn user_account(user: &str) -> String {
    format!("user:{user}")
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::thread_rng().gen::<u128>() >> 32)
}

fn check_amount(what: &str, amount: i64) -> Result<()> {
    if amount <= 0 || amount > MAX_AMOUNT_MINOR {
        return Err(invalid(format!(
            "{what} must be a positive whole number of minor units up to {MAX_AMOUNT_MINOR}; got {amount}"
        )));
    }
    Ok(())
}

fn check_currency(currency: &str) -> Result<()> {
    if currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{currency}' is not an ISO 4217 currency code like USD or IDR"
        )))
    }
}

fn check_name(what: &str, value: &str) -> Result<()> {
    validate_name(what, value, MAX_IDENTITY_BYTES).map_err(invalid)
}

fn check_key(key: &str) -> Result<()> {
    validate_name("idempotency_key", key, MAX_IDEMPOTENCY_KEY_BYTES).map_err(invalid)
}

fn gift_from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Gift, StoreError> {
    Ok(Gift {
        gift_id: text(r, "gift_id")?,
        name: text(r, "name")?,
        price_minor: int(r, "price_minor")?,
        currency: text(r, "currency")?,
    })
}

fn sale_from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Sale, StoreError> {
    Ok(Sale {
        sale_id: text(r, "sale_id")?,
        room: text(r, "room")?,
        product_id: text(r, "product_id")?,
        title: text(r, "title")?,
        price_minor: int(r, "price_minor")?,
        currency: text(r, "currency")?,
        stock: int(r, "stock")?,
        sold: int(r, "sold")?,
        per_buyer_limit: int(r, "per_buyer_limit")?,
        starts_at_ms: int(r, "starts_at_ms")? as u64,
        ends_at_ms: int(r, "ends_at_ms")? as u64,
    })
}

fn order_from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Order, StoreError> {
    Ok(Order {
        order_id: text(r, "order_id")?,
        sale_id: text(r, "sale_id")?,
        room: text(r, "room")?,
        buyer: text(r, "buyer")?,
        product_id: text(r, "product_id")?,
        title: text(r, "title")?,
        quantity: int(r, "quantity")?,
        amount_minor: int(r, "amount_minor")?,
        currency: text(r, "currency")?,
        created_at_ms: int(r, "created_at_ms")? as u64,
    })
}

fn coupon_from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Coupon, StoreError> {
    Ok(Coupon {
        coupon_id: text(r, "coupon_id")?,
        room: text(r, "room")?,
        quantity: int(r, "quantity")?,
        claimed: int(r, "claimed")?,
        value_minor: int(r, "value_minor")?,
        currency: text(r, "currency")?,
    })
}

fn digest(request: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(request.to_string().as_bytes()))
}

/// The answer to a money request, and whether it was done now or earlier (a retry of
/// the same idempotency key), so only the first is announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    pub value: T,
    pub replayed: bool,
}

impl<T> Applied<T> {
    fn fresh(value: T) -> Self {
        Applied {
            value,
            replayed: false,
        }
    }

    fn replayed(value: T) -> Self {
        Applied {
            value,
            replayed: true,
        }
    }
}

/// Most money requests applied in one group commit.
const GROUP_COMMIT_MAX: usize = 64;

/// A gift ready to be written: checked, priced, and its catalogue entry found.
struct GiftJob {
    key: String,
    room: String,
    sender: String,
    host: String,
    gift: Gift,
    count: i64,
    amount: i64,
    now_ms: u64,
}

/// A flash-sale purchase ready to be written: the sale found open, the quantity within
/// its limit and priced.
struct PurchaseJob {
    key: String,
    buyer: String,
    sale: Sale,
    quantity: i64,
    amount: i64,
    now_ms: u64,
}

/// A request waiting for the group-commit writer, and then its answer.
struct Queued<J, T> {
    job: J,
    reply: oneshot::Sender<Result<Applied<T>>>,
    answer: Option<Result<Applied<T>>>,
}

impl<J, T> Queued<J, T> {
    /// Keeps the request's answer and says whether it was refused. A store failure is
    /// not an answer: it fails the whole group.
    fn settle(&mut self, result: Result<Applied<T>>) -> Result<bool> {
        match result {
            Err(e) if e.code == ErrorCode::Internal => Err(e),
            result => {
                let refused = result.is_err();
                self.answer = Some(result);
                Ok(refused)
            }
        }
    }

    /// Replies once the group has committed, or failed.
    fn reply(self, group: &Result<()>) {
        let answer = match group {
            Ok(()) => self.answer.unwrap_or_else(|| Err(writer_gone())),
            Err(e) => Err(e.clone()),
        };
        let _ = self.reply.send(answer);
    }

    fn applied_fresh(&self) -> bool {
        matches!(
            self.answer,
            Some(Ok(Applied {
                replayed: false,
                ..
            }))
        )
    }
}

/// The money requests the group-commit writer takes.
enum Job {
    Gift(Queued<GiftJob, GiftSent>),
    Purchase(Queued<PurchaseJob, Order>),
}

fn writer_gone() -> ProtoError {
    internal(StoreError::Sql(sqlx::Error::PoolClosed))
}

/// Hands a request to the group-commit writer as a `kind` of job and waits for its
/// answer.
async fn through_writer<J, T>(
    writer: &mpsc::Sender<Job>,
    job: J,
    kind: fn(Queued<J, T>) -> Job,
) -> Result<Applied<T>> {
    let (reply, answer) = oneshot::channel();
    let queued = Queued {
        job,
        reply,
        answer: None,
    };
    writer.send(kind(queued)).await.map_err(|_| writer_gone())?;
    answer.await.unwrap_or_else(|_| Err(writer_gone()))
}

pub struct Ledger {
    db: Db,
    /// Set when gifts and purchases go through the group-commit writer (SQLite).
    writer: OnceLock<mpsc::Sender<Job>>,
    /// Queue order webhooks (only when the merchant configured a URL for them).
    order_webhooks: bool,
    outbox_wake: Arc<Notify>,
}

impl Ledger {
    pub async fn open(db: Db, order_webhooks: bool, outbox_wake: Arc<Notify>) -> Result<Ledger> {
        db.migrate(crate::schema::MIGRATIONS)
            .await
            .map_err(internal)?;
        Ok(Ledger {
            db,
            writer: OnceLock::new(),
            order_webhooks,
            outbox_wake,
        })
    }

    /// Claims an idempotency key inside `tx`. `Some` is the answer to give instead of
    /// doing the work again (the first answer), or a conflict.
    async fn claim_key<T: DeserializeOwned>(
        &self,
        tx: &mut Tx,
        actor: &str,
        key: &str,
        digest: &str,
        now_ms: u64,
    ) -> Result<Option<T>> {
        let inserted = sqlx::query(&self.db.sql(
            "INSERT INTO commerce_requests (actor, idem_key, digest, response, created_at_ms) VALUES (?, ?, ?, '', ?) ON CONFLICT DO NOTHING",
        ))
        .bind(actor)
        .bind(key)
        .bind(digest)
        .bind(now_ms as i64)
        .execute(&mut **tx)
        .await
        .map_err(internal)?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        let row = sqlx::query(&self.db.sql(
            "SELECT digest, response FROM commerce_requests WHERE actor = ? AND idem_key = ?",
        ))
        .bind(actor)
        .bind(key)
        .fetch_one(&mut **tx)
        .await
        .map_err(internal)?;
        if text(&row, "digest").map_err(internal)? != digest {
            return Err(ProtoError::new(
                ErrorCode::IdempotencyConflict,
                format!("idempotency key '{key}' was used for a different request; use a new key"),
            ));
        }
        let stored = text(&row, "response").map_err(internal)?;
        serde_json::from_str(&stored)
            .map(Some)
            .map_err(|e| internal(StoreError::Sql(sqlx::Error::Decode(Box::new(e)))))
    }

    /// Takes back a refused request's claim on its key; a stored answer stays.
    async fn forget_claim(&self, tx: &mut Tx, actor: &str, key: &str) -> Result<()> {
        sqlx::query(&self.db.sql(
            "DELETE FROM commerce_requests WHERE actor = ? AND idem_key = ? AND response = ''",
        ))
        .bind(actor)
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        Ok(())
    }

    async fn finish_key<T: Serialize>(
        &self,
        tx: &mut Tx,
        actor: &str,
        key: &str,
        answer: &T,
    ) -> Result<()> {
        let json = serde_json::to_string(answer).expect("ledger answers serialise");
        sqlx::query(
            &self
                .db
                .sql("UPDATE commerce_requests SET response = ? WHERE actor = ? AND idem_key = ?"),
        )
        .bind(json)
        .bind(actor)
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        Ok(())
    }

    /// Moves `amount` from one account to another with both entries. A debit from a
    /// user's wallet needs the balance to cover it. Returns the payer's new balance.
    #[allow(clippy::too_many_arguments)]
    async fn transfer(
        &self,
        tx: &mut Tx,
        txn_id: &str,
        kind: &str,
        room: Option<&str>,
        from: &str,
        to: &str,
        currency: &str,
        amount: i64,
        now_ms: u64,
    ) -> Result<i64> {
        let db = &self.db;
        // Wallet rows are locked in name order, so two transfers in opposite directions
        // cannot deadlock on PostgreSQL. SQLite has one writer and debits first, so a
        // refused debit has written nothing (a refused gift in a group commit relies on it).
        let credit_first = self.db.backend() == Backend::Postgres && to < from;
        if credit_first {
            self.credit(tx, to, currency, amount).await?;
        }
        let from_balance = if from.starts_with("user:") {
            let row = sqlx::query(&db.sql(
                "UPDATE commerce_wallets SET balance_minor = balance_minor - ? \
                 WHERE account = ? AND currency = ? AND balance_minor >= ? RETURNING balance_minor",
            ))
            .bind(amount)
            .bind(from)
            .bind(currency)
            .bind(amount)
            .fetch_optional(&mut **tx)
            .await
            .map_err(internal)?;
            match row {
                Some(row) => int(&row, "balance_minor").map_err(internal)?,
                None => {
                    let have = self.balance_in(tx, from, currency).await?;
                    return Err(ProtoError::new(
                        ErrorCode::InsufficientFunds,
                        format!(
                            "the wallet holds {have} {currency} (minor units); this needs {amount}"
                        ),
                    ));
                }
            }
        } else {
            self.credit(tx, from, currency, -amount).await?
        };
        if !credit_first {
            self.credit(tx, to, currency, amount).await?;
        }
        // Both legs in one statement: each round trip to the single SQLite writer counts.
        sqlx::query(&db.sql(
            "INSERT INTO commerce_entries (txn_id, account, currency, amount_minor, kind, room, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(txn_id)
        .bind(from)
        .bind(currency)
        .bind(-amount)
        .bind(kind)
        .bind(room)
        .bind(now_ms as i64)
        .bind(txn_id)
        .bind(to)
        .bind(currency)
        .bind(amount)
        .bind(kind)
        .bind(room)
        .bind(now_ms as i64)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        Ok(from_balance)
    }

    async fn credit(&self, tx: &mut Tx, account: &str, currency: &str, amount: i64) -> Result<i64> {
        let row = sqlx::query(&self.db.sql(
            "INSERT INTO commerce_wallets (account, currency, balance_minor) VALUES (?, ?, ?) \
             ON CONFLICT (account, currency) DO UPDATE SET balance_minor = commerce_wallets.balance_minor + excluded.balance_minor \
             RETURNING balance_minor",
        ))
        .bind(account)
        .bind(currency)
        .bind(amount)
        .fetch_one(&mut **tx)
        .await
        .map_err(internal)?;
        int(&row, "balance_minor").map_err(internal)
    }

    /// An account's balance, read through `executor` (a transaction, or the read pool).
    async fn balance_on<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = Any>,
        account: &str,
        currency: &str,
    ) -> Result<i64> {
        let row =
            sqlx::query(&self.db.sql(
                "SELECT balance_minor FROM commerce_wallets WHERE account = ? AND currency = ?",
            ))
            .bind(account)
            .bind(currency)
            .fetch_optional(executor)
            .await
            .map_err(internal)?;
        row.map(|r| int(&r, "balance_minor").map_err(internal))
            .transpose()
            .map(|b| b.unwrap_or(0))
    }

    async fn balance_in(&self, tx: &mut Tx, account: &str, currency: &str) -> Result<i64> {
        self.balance_on(&mut **tx, account, currency).await
    }

    pub async fn balance(&self, user: &str, currency: &str) -> Result<Balance> {
        check_name("user", user)?;
        check_currency(currency)?;
        let balance_minor = self
            .balance_on(self.db.reader(), &user_account(user), currency)
            .await?;
        Ok(Balance {
            user: user.to_owned(),
            currency: currency.to_owned(),
            balance_minor,
        })
    }

    /// Loads money into a user's wallet after the merchant's backend collected it.
    pub async fn top_up(
        &self,
        key: &str,
        user: &str,
        amount: i64,
        currency: &str,
        now_ms: u64,
    ) -> Result<WalletTxn> {
        self.wallet_move(key, "top_up", user, amount, currency, now_ms)
            .await
    }

    /// Takes money out of a user's wallet (the merchant pays it back outside Souk).
    pub async fn refund(
        &self,
        key: &str,
        user: &str,
        amount: i64,
        currency: &str,
        now_ms: u64,
    ) -> Result<WalletTxn> {
        self.wallet_move(key, "refund", user, amount, currency, now_ms)
            .await
    }

    async fn wallet_move(
        &self,
        key: &str,
        kind: &str,
        user: &str,
        amount: i64,
        currency: &str,
        now_ms: u64,
    ) -> Result<WalletTxn> {
        check_key(key)?;
        check_name("user", user)?;
        check_amount("amount_minor", amount)?;
        check_currency(currency)?;
        let request =
            serde_json::json!({"op": kind, "user": user, "amount": amount, "currency": currency});
        let mut tx = self.db.begin().await.map_err(internal)?;
        if let Some(done) = self
            .claim_key(&mut tx, BACKEND, key, &digest(&request), now_ms)
            .await?
        {
            return Ok(done);
        }
        let txn_id = random_id("TX_");
        let account = user_account(user);
        let (from, to, signed) = if kind == "top_up" {
            (EXTERNAL, account.as_str(), amount)
        } else {
            (account.as_str(), EXTERNAL, -amount)
        };
        self.transfer(
            &mut tx, &txn_id, kind, None, from, to, currency, amount, now_ms,
        )
        .await?;
        let balance_minor = self.balance_in(&mut tx, &account, currency).await?;
        let answer = WalletTxn {
            txn_id,
            user: user.to_owned(),
            amount_minor: signed,
            currency: currency.to_owned(),
            balance_minor,
        };
        self.finish_key(&mut tx, BACKEND, key, &answer).await?;
        tx.commit().await.map_err(internal)?;
        Ok(answer)
    }

    /// Adds or replaces a gift in the catalogue.
    pub async fn put_gift(&self, gift: &Gift) -> Result<()> {
        check_name("gift_id", &gift.gift_id)?;
        check_name("name", &gift.name)?;
        check_amount("price_minor", gift.price_minor)?;
        check_currency(&gift.currency)?;
        sqlx::query(&self.db.sql(
            "INSERT INTO commerce_catalogue (gift_id, name, price_minor, currency) VALUES (?, ?, ?, ?) \
             ON CONFLICT (gift_id) DO UPDATE SET name = excluded.name, price_minor = excluded.price_minor, currency = excluded.currency",
        ))
        .bind(&gift.gift_id)
        .bind(&gift.name)
        .bind(gift.price_minor)
        .bind(&gift.currency)
        .execute(self.db.writer())
        .await
        .map_err(internal)?;
        Ok(())
    }

    pub async fn gifts(&self) -> Result<Vec<Gift>> {
        let rows = sqlx::query(
            "SELECT gift_id, name, price_minor, currency FROM commerce_catalogue ORDER BY price_minor, gift_id",
        )
        .fetch_all(self.db.reader())
        .await
        .map_err(internal)?;
        rows.iter()
            .map(gift_from_row)
            .collect::<std::result::Result<_, StoreError>>()
            .map_err(internal)
    }

    /// A viewer sends `count` of a gift to a host: one transaction debits the viewer
    /// and credits the host, or nothing happens.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_gift(
        &self,
        key: &str,
        room: &str,
        sender: &str,
        host: &str,
        gift_id: &str,
        count: i64,
        now_ms: u64,
    ) -> Result<Applied<GiftSent>> {
        check_key(key)?;
        check_name("host", host)?;
        if sender == host {
            return Err(invalid("a host cannot send a gift to themself"));
        }
        if !(1..=MAX_GIFT_COUNT).contains(&count) {
            return Err(invalid(format!("count must be 1 to {MAX_GIFT_COUNT}")));
        }
        let row = self
            .row_by_id(
                "SELECT gift_id, name, price_minor, currency FROM commerce_catalogue WHERE gift_id = ?",
                gift_id,
                || ProtoError::new(ErrorCode::GiftNotFound, format!("no gift '{gift_id}' in the catalogue")),
            )
            .await?;
        let gift = gift_from_row(&row).map_err(internal)?;
        let amount = gift
            .price_minor
            .checked_mul(count)
            .filter(|a| *a <= MAX_AMOUNT_MINOR)
            .ok_or_else(|| invalid("that many of this gift is more than one payment may be"))?;
        let job = GiftJob {
            key: key.to_owned(),
            room: room.to_owned(),
            sender: sender.to_owned(),
            host: host.to_owned(),
            gift,
            count,
            amount,
            now_ms,
        };
        if let Some(writer) = self.writer.get() {
            return through_writer(writer, job, Job::Gift).await;
        }
        let mut tx = self.db.begin().await.map_err(internal)?;
        let applied = self.gift_in(&mut tx, &job).await?;
        if !applied.replayed {
            tx.commit().await.map_err(internal)?;
        }
        Ok(applied)
    }

    /// A gift's writes inside `tx`. On a refusal nothing of it is left in `tx` but,
    /// in a group commit, the claimed key, which the caller takes back.
    async fn gift_in(&self, tx: &mut Tx, job: &GiftJob) -> Result<Applied<GiftSent>> {
        let request = serde_json::json!({"op": "gift", "room": job.room, "host": job.host, "gift": job.gift.gift_id, "count": job.count});
        if let Some(done) = self
            .claim_key(tx, &job.sender, &job.key, &digest(&request), job.now_ms)
            .await?
        {
            return Ok(Applied::replayed(done));
        }
        let txn_id = random_id("TX_");
        let balance_minor = self
            .transfer(
                tx,
                &txn_id,
                "gift",
                Some(&job.room),
                &user_account(&job.sender),
                &user_account(&job.host),
                &job.gift.currency,
                job.amount,
                job.now_ms,
            )
            .await?;
        sqlx::query(&self.db.sql(
            "INSERT INTO commerce_gifts_sent (txn_id, room, sender, host, gift_id, gift_count, amount_minor, currency, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&txn_id)
        .bind(&job.room)
        .bind(&job.sender)
        .bind(&job.host)
        .bind(&job.gift.gift_id)
        .bind(job.count)
        .bind(job.amount)
        .bind(&job.gift.currency)
        .bind(job.now_ms as i64)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        let answer = GiftSent {
            txn_id,
            room: job.room.clone(),
            sender: job.sender.clone(),
            host: job.host.clone(),
            gift_id: job.gift.gift_id.clone(),
            gift_name: job.gift.name.clone(),
            count: job.count,
            amount_minor: job.amount,
            currency: job.gift.currency.clone(),
            balance_minor,
            created_at_ms: job.now_ms,
        };
        self.finish_key(tx, &job.sender, &job.key, &answer).await?;
        Ok(Applied::fresh(answer))
    }

    /// Group commit on SQLite: gifts and purchases queue for the one writer, which
    /// applies up to `GROUP_COMMIT_MAX` of them in one transaction, so the commit's cost
    /// is shared. A refused request is undone alone and the others go on: a refused gift
    /// has written only its claimed key, which it takes back; a purchase can be refused
    /// after taking stock, so it runs inside a savepoint (two more statements, which a
    /// gift would feel: 15-25% of its rate). A store failure fails the whole group
    /// (nothing of it committed), and each sender may retry with its key.
    pub fn start_group_commit(self: &Arc<Self>) {
        if self.db.backend() != Backend::Sqlite {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        if self.writer.set(tx).is_err() {
            return;
        }
        let ledger = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while group.len() < GROUP_COMMIT_MAX {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                let Some(ledger) = ledger.upgrade() else {
                    return;
                };
                ledger.commit_group(group).await;
            }
        });
    }

    async fn commit_group(&self, mut group: Vec<Job>) {
        let outcome: Result<()> = async {
            let mut tx = self.db.begin().await.map_err(internal)?;
            for job in &mut group {
                match job {
                    Job::Gift(q) => {
                        let result = self.gift_in(&mut tx, &q.job).await;
                        if q.settle(result)? {
                            self.forget_claim(&mut tx, &q.job.sender, &q.job.key)
                                .await?;
                        }
                    }
                    Job::Purchase(q) => {
                        self.execute(&mut tx, "SAVEPOINT purchase").await?;
                        let result = self.buy_in(&mut tx, &q.job).await;
                        if q.settle(result)? {
                            self.execute(&mut tx, "ROLLBACK TO SAVEPOINT purchase")
                                .await?;
                        }
                        self.execute(&mut tx, "RELEASE SAVEPOINT purchase").await?;
                    }
                }
            }
            tx.commit().await.map_err(internal)
        }
        .await;
        let orders = outcome.is_ok()
            && group
                .iter()
                .any(|job| matches!(job, Job::Purchase(q) if q.applied_fresh()));
        for job in group {
            match job {
                Job::Gift(q) => q.reply(&outcome),
                Job::Purchase(q) => q.reply(&outcome),
            }
        }
        if orders {
            self.wake_order_webhooks();
        }
    }

    async fn execute(&self, tx: &mut Tx, sql: &str) -> Result<()> {
        sqlx::query(sql)
            .execute(&mut **tx)
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// Hosts of a room by gifts received, most first.
    pub async fn leaderboard(&self, room: &str, limit: u32) -> Result<Vec<LeaderboardEntry>> {
        let rows = sqlx::query(&self.db.sql(
            "SELECT host, currency, CAST(SUM(amount_minor) AS BIGINT) AS total FROM commerce_gifts_sent WHERE room = ? \
             GROUP BY host, currency ORDER BY total DESC, host LIMIT ?",
        ))
        .bind(room)
        .bind(limit as i64)
        .fetch_all(self.db.reader())
        .await
        .map_err(internal)?;
        rows.iter()
            .map(|r| {
                Ok(LeaderboardEntry {
                    host: text(r, "host")?,
                    total_minor: int(r, "total")?,
                    currency: text(r, "currency")?,
                })
            })
            .collect::<std::result::Result<_, StoreError>>()
            .map_err(internal)
    }

    /// Starts a battle: two hosts, scored by gifts received from now for `duration_ms`.
    pub async fn start_battle(
        &self,
        room: &str,
        hosts: [&str; 2],
        duration_ms: u64,
        now_ms: u64,
    ) -> Result<Battle> {
        for h in hosts {
            check_name("host", h)?;
        }
        if hosts[0] == hosts[1] || duration_ms == 0 || duration_ms > 3_600_000 {
            return Err(invalid(
                "a battle has two different hosts and lasts up to an hour",
            ));
        }
        let battle_id = random_id("BT_");
        sqlx::query(&self.db.sql(
            "INSERT INTO commerce_battles (battle_id, room, host_a, host_b, starts_at_ms, ends_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(&battle_id)
        .bind(room)
        .bind(hosts[0])
        .bind(hosts[1])
        .bind(now_ms as i64)
        .bind((now_ms + duration_ms) as i64)
        .execute(self.db.writer())
        .await
        .map_err(internal)?;
        self.battle(&battle_id, now_ms).await
    }

    pub async fn battle(&self, battle_id: &str, now_ms: u64) -> Result<Battle> {
        let row = sqlx::query(&self.db.sql(
            "SELECT room, host_a, host_b, starts_at_ms, ends_at_ms FROM commerce_battles WHERE battle_id = ?",
        ))
        .bind(battle_id)
        .fetch_optional(self.db.reader())
        .await
        .map_err(internal)?
        .ok_or_else(|| invalid(format!("no battle '{battle_id}'")))?;
        let get = |c: &str| text(&row, c).map_err(internal);
        let (room, a, b) = (get("room")?, get("host_a")?, get("host_b")?);
        let starts = int(&row, "starts_at_ms").map_err(internal)? as u64;
        let ends = int(&row, "ends_at_ms").map_err(internal)? as u64;
        let mut scores = [0i64; 2];
        for (i, host) in [&a, &b].into_iter().enumerate() {
            let row = sqlx::query(&self.db.sql(
                "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS total FROM commerce_gifts_sent \
                 WHERE room = ? AND host = ? AND created_at_ms >= ? AND created_at_ms < ?",
            ))
            .bind(&room)
            .bind(host.as_str())
            .bind(starts as i64)
            .bind(ends as i64)
            .fetch_one(self.db.reader())
            .await
            .map_err(internal)?;
            scores[i] = int(&row, "total").map_err(internal)?;
        }
        let winner = (now_ms >= ends && scores[0] != scores[1]).then(|| {
            if scores[0] > scores[1] {
                a.clone()
            } else {
                b.clone()
            }
        });
        Ok(Battle {
            battle_id: battle_id.to_owned(),
            room,
            hosts: [a, b],
            scores_minor: scores,
            starts_at_ms: starts,
            ends_at_ms: ends,
            winner,
        })
    }

    /// Issues `quantity` coupons in a room.
    pub async fn issue_coupon(&self, coupon: &Coupon) -> Result<()> {
        check_name("coupon_id", &coupon.coupon_id)?;
        check_amount("value_minor", coupon.value_minor)?;
        check_currency(&coupon.currency)?;
        if !(1..=10_000_000).contains(&coupon.quantity) {
            return Err(invalid("a coupon issue has 1 to 10,000,000 coupons"));
        }
        let inserted = sqlx::query(&self.db.sql(
            "INSERT INTO commerce_coupons (coupon_id, room, quantity, claimed, value_minor, currency) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(&coupon.coupon_id)
        .bind(&coupon.room)
        .bind(coupon.quantity)
        .bind(coupon.value_minor)
        .bind(&coupon.currency)
        .execute(self.db.writer())
        .await
        .map_err(internal)?
        .rows_affected();
        if inserted == 0 {
            return Err(invalid(format!(
                "coupon '{}' exists already",
                coupon.coupon_id
            )));
        }
        Ok(())
    }

    /// A user claims one coupon: at most once each, and never more than were issued.
    pub async fn claim_coupon(
        &self,
        room: &str,
        coupon_id: &str,
        user: &str,
        now_ms: u64,
    ) -> Result<CouponClaimed> {
        if self.coupon(coupon_id).await?.room != room {
            return Err(ProtoError::new(
                ErrorCode::CouponNotFound,
                format!("no coupon '{coupon_id}' in this room"),
            ));
        }
        let mut tx = self.db.begin().await.map_err(internal)?;
        let left = sqlx::query(&self.db.sql(
            "UPDATE commerce_coupons SET claimed = claimed + 1 WHERE coupon_id = ? AND claimed < quantity \
             RETURNING quantity - claimed AS remaining",
        ))
        .bind(coupon_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?;
        let Some(left) = left else {
            let exists = sqlx::query(
                &self
                    .db
                    .sql("SELECT coupon_id FROM commerce_coupons WHERE coupon_id = ?"),
            )
            .bind(coupon_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(internal)?
            .is_some();
            return Err(if exists {
                ProtoError::new(
                    ErrorCode::CouponExhausted,
                    format!("every '{coupon_id}' coupon has been claimed"),
                )
            } else {
                ProtoError::new(
                    ErrorCode::CouponNotFound,
                    format!("no coupon '{coupon_id}'"),
                )
            });
        };
        let inserted = sqlx::query(&self.db.sql(
            "INSERT INTO commerce_coupon_claims (coupon_id, user_id, created_at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(coupon_id)
        .bind(user)
        .bind(now_ms as i64)
        .execute(&mut *tx)
        .await
        .map_err(internal)?
        .rows_affected();
        if inserted == 0 {
            // Dropping `tx` rolls the count back too.
            return Err(ProtoError::new(
                ErrorCode::CouponAlreadyClaimed,
                format!("you already claimed coupon '{coupon_id}'"),
            ));
        }
        let remaining = int(&left, "remaining").map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(CouponClaimed {
            coupon_id: coupon_id.to_owned(),
            user: user.to_owned(),
            remaining,
        })
    }

    pub async fn create_sale(&self, sale: &Sale) -> Result<()> {
        check_name("sale_id", &sale.sale_id)?;
        check_name("product_id", &sale.product_id)?;
        check_name("title", &sale.title)?;
        check_amount("price_minor", sale.price_minor)?;
        check_currency(&sale.currency)?;
        if sale.stock <= 0 || sale.per_buyer_limit <= 0 || sale.ends_at_ms <= sale.starts_at_ms {
            return Err(invalid(
                "a sale needs stock, a per-buyer limit, and an end after its start",
            ));
        }
        let inserted = sqlx::query(&self.db.sql(
            "INSERT INTO commerce_sales (sale_id, room, product_id, title, price_minor, currency, stock, sold, per_buyer_limit, starts_at_ms, ends_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(&sale.sale_id)
        .bind(&sale.room)
        .bind(&sale.product_id)
        .bind(&sale.title)
        .bind(sale.price_minor)
        .bind(&sale.currency)
        .bind(sale.stock)
        .bind(sale.per_buyer_limit)
        .bind(sale.starts_at_ms as i64)
        .bind(sale.ends_at_ms as i64)
        .execute(self.db.writer())
        .await
        .map_err(internal)?
        .rows_affected();
        if inserted == 0 {
            return Err(invalid(format!("sale '{}' exists already", sale.sale_id)));
        }
        Ok(())
    }

    pub async fn sale(&self, sale_id: &str) -> Result<Sale> {
        let row = self
            .row_by_id(
                "SELECT sale_id, room, product_id, title, price_minor, currency, stock, sold, per_buyer_limit, starts_at_ms, ends_at_ms \
                 FROM commerce_sales WHERE sale_id = ?",
                sale_id,
                || ProtoError::new(ErrorCode::SaleNotFound, format!("no sale '{sale_id}'")),
            )
            .await?;
        sale_from_row(&row).map_err(internal)
    }

    /// Buys in a flash sale, paid from the buyer's wallet. Stock, the per-buyer limit and
    /// the payment are taken in one transaction: no overselling, whatever the concurrency.
    #[allow(clippy::too_many_arguments)]
    pub async fn buy(
        &self,
        key: &str,
        room: &str,
        sale_id: &str,
        buyer: &str,
        quantity: i64,
        now_ms: u64,
    ) -> Result<Applied<Order>> {
        check_key(key)?;
        if !(1..=1000).contains(&quantity) {
            return Err(invalid("quantity must be 1 to 1000"));
        }
        let sale = self.sale(sale_id).await?;
        if sale.room != room {
            return Err(ProtoError::new(
                ErrorCode::SaleNotFound,
                format!("no sale '{sale_id}' in this room"),
            ));
        }
        if now_ms < sale.starts_at_ms || now_ms >= sale.ends_at_ms {
            return Err(ProtoError::new(
                ErrorCode::SaleNotActive,
                if now_ms < sale.starts_at_ms {
                    format!(
                        "the sale starts in {} s",
                        (sale.starts_at_ms - now_ms).div_ceil(1000)
                    )
                } else {
                    "the sale has ended".to_owned()
                },
            ));
        }
        if quantity > sale.per_buyer_limit {
            return Err(ProtoError::new(
                ErrorCode::PurchaseLimit,
                format!("at most {} per buyer in this sale", sale.per_buyer_limit),
            ));
        }
        let amount = sale
            .price_minor
            .checked_mul(quantity)
            .filter(|a| *a <= MAX_AMOUNT_MINOR)
            .ok_or_else(|| invalid("that quantity is more than one payment may be"))?;
        let job = PurchaseJob {
            key: key.to_owned(),
            buyer: buyer.to_owned(),
            sale,
            quantity,
            amount,
            now_ms,
        };
        if let Some(writer) = self.writer.get() {
            return through_writer(writer, job, Job::Purchase).await;
        }
        let mut tx = self.db.begin().await.map_err(internal)?;
        let applied = self.buy_in(&mut tx, &job).await?;
        if !applied.replayed {
            tx.commit().await.map_err(internal)?;
            self.wake_order_webhooks();
        }
        Ok(applied)
    }

    /// A purchase's writes inside `tx`. A refusal may leave some of them (the claimed
    /// key, the stock taken): the caller rolls them back.
    async fn buy_in(&self, tx: &mut Tx, job: &PurchaseJob) -> Result<Applied<Order>> {
        let PurchaseJob {
            key,
            buyer,
            sale,
            quantity,
            amount,
            now_ms,
        } = job;
        let (sale_id, quantity, amount, now_ms) = (&sale.sale_id, *quantity, *amount, *now_ms);
        let request = serde_json::json!({"op": "buy", "sale": sale_id, "quantity": quantity});
        if let Some(done) = self
            .claim_key(tx, buyer, key, &digest(&request), now_ms)
            .await?
        {
            return Ok(Applied::replayed(done));
        }
        let taken = sqlx::query(&self.db.sql(
            "UPDATE commerce_sales SET sold = sold + ? WHERE sale_id = ? AND sold + ? <= stock",
        ))
        .bind(quantity)
        .bind(sale_id)
        .bind(quantity)
        .execute(&mut **tx)
        .await
        .map_err(internal)?
        .rows_affected();
        if taken == 0 {
            return Err(ProtoError::new(
                ErrorCode::SoldOut,
                format!("not enough '{}' left for {quantity} more", sale.title),
            ));
        }
        let within_limit = sqlx::query(&self.db.sql(
            "INSERT INTO commerce_sale_buyers (sale_id, buyer, quantity) VALUES (?, ?, ?) \
             ON CONFLICT (sale_id, buyer) DO UPDATE SET quantity = commerce_sale_buyers.quantity + excluded.quantity \
             WHERE commerce_sale_buyers.quantity + excluded.quantity <= ?",
        ))
        .bind(sale_id)
        .bind(buyer)
        .bind(quantity)
        .bind(sale.per_buyer_limit)
        .execute(&mut **tx)
        .await
        .map_err(internal)?
        .rows_affected();
        if within_limit == 0 {
            return Err(ProtoError::new(
                ErrorCode::PurchaseLimit,
                format!("at most {} per buyer in this sale", sale.per_buyer_limit),
            ));
        }
        let order_id = random_id("OR_");
        self.transfer(
            tx,
            &order_id,
            "purchase",
            Some(&sale.room),
            &user_account(buyer),
            MERCHANT,
            &sale.currency,
            amount,
            now_ms,
        )
        .await?;
        let order = Order {
            order_id,
            sale_id: sale_id.to_owned(),
            room: sale.room.clone(),
            buyer: buyer.to_owned(),
            product_id: sale.product_id.clone(),
            title: sale.title.clone(),
            quantity,
            amount_minor: amount,
            currency: sale.currency.clone(),
            created_at_ms: now_ms,
        };
        sqlx::query(&self.db.sql(
            "INSERT INTO commerce_orders (order_id, sale_id, room, buyer, product_id, quantity, amount_minor, currency, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&order.order_id)
        .bind(sale_id)
        .bind(&order.room)
        .bind(buyer)
        .bind(&order.product_id)
        .bind(quantity)
        .bind(amount)
        .bind(&order.currency)
        .bind(now_ms as i64)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        if self.order_webhooks {
            let mut payload = serde_json::to_value(&order).expect("orders serialise");
            payload["type"] = ORDER_TOPIC.into();
            payload["id"] = order.order_id.clone().into();
            self.db
                .enqueue(
                    tx,
                    &order.order_id,
                    ORDER_TOPIC,
                    &payload.to_string(),
                    now_ms,
                )
                .await
                .map_err(internal)?;
        }
        self.finish_key(tx, buyer, key, &order).await?;
        Ok(Applied::fresh(order))
    }

    fn wake_order_webhooks(&self) {
        if self.order_webhooks {
            self.outbox_wake.notify_one();
        }
    }

    /// The one row `sql` selects for `id`, or the `missing` error.
    async fn row_by_id(
        &self,
        sql: &str,
        id: &str,
        missing: impl FnOnce() -> ProtoError,
    ) -> Result<sqlx::any::AnyRow> {
        sqlx::query(&self.db.sql(sql))
            .bind(id)
            .fetch_optional(self.db.reader())
            .await
            .map_err(internal)?
            .ok_or_else(missing)
    }

    /// One order of a flash sale.
    pub async fn order(&self, order_id: &str) -> Result<Order> {
        let row = self
            .row_by_id(
                "SELECT o.order_id, o.sale_id, o.room, o.buyer, o.product_id, s.title, o.quantity, \
                 o.amount_minor, o.currency, o.created_at_ms \
                 FROM commerce_orders o JOIN commerce_sales s ON s.sale_id = o.sale_id WHERE o.order_id = ?",
                order_id,
                || ProtoError::new(ErrorCode::OrderNotFound, format!("no order '{order_id}'")),
            )
            .await?;
        order_from_row(&row).map_err(internal)
    }

    /// What each buyer bought in a sale.
    pub async fn buyers(&self, sale_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(&self.db.sql(
            "SELECT buyer, quantity FROM commerce_sale_buyers WHERE sale_id = ? ORDER BY buyer",
        ))
        .bind(sale_id)
        .fetch_all(self.db.reader())
        .await
        .map_err(internal)?;
        rows.iter()
            .map(|r| Ok((text(r, "buyer")?, int(r, "quantity")?)))
            .collect::<std::result::Result<_, StoreError>>()
            .map_err(internal)
    }

    pub async fn coupon(&self, coupon_id: &str) -> Result<Coupon> {
        let row = self
            .row_by_id(
                "SELECT coupon_id, room, quantity, claimed, value_minor, currency FROM commerce_coupons WHERE coupon_id = ?",
                coupon_id,
                || ProtoError::new(ErrorCode::CouponNotFound, format!("no coupon '{coupon_id}'")),
            )
            .await?;
        coupon_from_row(&row).map_err(internal)
    }

    /// Revenue from flash sales so far, in one currency.
    pub async fn merchant_revenue(&self, currency: &str) -> Result<i64> {
        self.balance_on(self.db.reader(), MERCHANT, currency).await
    }

    /// Checks the books: per currency the entries sum to zero, so do the balances, and
    /// every account's balance equals the sum of its entries; no user wallet is negative.
    /// `Err` says what is wrong.
    pub async fn audit(&self) -> Result<std::result::Result<(), String>> {
        let rows = sqlx::query(
            "SELECT w.account AS account, w.currency AS currency, w.balance_minor AS balance, \
             CAST(COALESCE((SELECT SUM(e.amount_minor) FROM commerce_entries e WHERE e.account = w.account AND e.currency = w.currency), 0) AS BIGINT) AS entries \
             FROM commerce_wallets w",
        )
        .fetch_all(self.db.reader())
        .await
        .map_err(internal)?;
        let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
        for r in &rows {
            let account = text(r, "account").map_err(internal)?;
            let currency = text(r, "currency").map_err(internal)?;
            let balance = int(r, "balance").map_err(internal)?;
            let entries = int(r, "entries").map_err(internal)?;
            if balance != entries {
                return Ok(Err(format!(
                    "{account} {currency}: balance {balance} but entries sum to {entries}"
                )));
            }
            if account.starts_with("user:") && balance < 0 {
                return Ok(Err(format!("{account} {currency} is negative: {balance}")));
            }
            *totals.entry(currency).or_default() += balance;
        }
        for (currency, total) in totals {
            if total != 0 {
                return Ok(Err(format!("{currency}: balances sum to {total}, not 0")));
            }
        }
        Ok(Ok(()))
    }
}
