//! Live-commerce money paths: the exact path of DESIGN.md.
//!
//! Every movement of money is a transaction of double-entry records that sum to zero:
//! a top-up moves money from `external:payments` (what the merchant's backend collected)
//! into a user's wallet; a gift from the viewer's wallet to the host's; a purchase from the
//! buyer's wallet to `merchant:sales`. Wallet balances are kept beside the entries and
//! checked against them by [`Ledger::audit`]. A debit that would take a user's wallet below
//! zero is refused inside the same statement that makes it, so there is no double spend
//! however requests interleave.
//!
//! Requests that move money carry an idempotency key, claimed in the same transaction as
//! the money moves: a retry returns the first answer, and a reuse of the key for another
//! request is refused.

mod ledger;
mod schema;

pub use ledger::{Applied, Ledger, ORDER_TOPIC};
