//! What other daemons published, held to this daemon's own bounds before it is applied:
//! whoever can publish on the channel could send anything.

use std::time::Duration;

use pacer_protocol::BudgetOwner;
use pacer_protocol::message::BudgetId;
use pacer_protocol::text::{MAX_MESSAGE, bounded};

use super::ClusterEvent;
use crate::lockouts::MAX_RATE_LIMIT_WAIT;
use crate::overload::OVERLOAD_BACKOFF_MAX;
use crate::snapshot::is_account_label;
use crate::{MAX_LIMIT, MAX_MODEL_LEN, MAX_NAME_LEN, MAX_WAITERS};

/// `event`, from daemon `from`, with every value held to the same caps as this daemon's own:
/// pauses and lockouts at most [`MAX_RATE_LIMIT_WAIT`], overload backoffs at most
/// [`OVERLOAD_BACKOFF_MAX`], limits at most [`MAX_LIMIT`], names and reasons bounded. `None`
/// when it names what no budget can be.
pub fn checked(event: ClusterEvent, from: &str) -> Option<ClusterEvent> {
    let capped = |for_ms: u64, cap: Duration| for_ms.min(cap.as_millis() as u64);
    Some(match event {
        ClusterEvent::Pause {
            budget,
            for_ms,
            reason,
            drain,
        } => ClusterEvent::Pause {
            budget: is_budget(&budget).then_some(budget)?,
            for_ms: capped(for_ms, MAX_RATE_LIMIT_WAIT),
            reason: bounded(&reason, MAX_MESSAGE),
            drain,
        },
        ClusterEvent::Lift { budget } => ClusterEvent::Lift {
            budget: is_budget(&budget).then_some(budget)?,
        },
        ClusterEvent::Overload { class, for_ms } => ClusterEvent::Overload {
            class: is_class(&class).then_some(class)?,
            for_ms: capped(for_ms, OVERLOAD_BACKOFF_MAX),
        },
        ClusterEvent::Lockout {
            owner,
            class,
            for_ms,
            reason,
        } => {
            if class.as_deref().is_some_and(|c| !is_class(c)) {
                return None;
            }
            ClusterEvent::Lockout {
                owner: is_owner(&owner).then_some(owner)?,
                class,
                for_ms: capped(for_ms, MAX_RATE_LIMIT_WAIT),
                reason: bounded(&reason, MAX_MESSAGE),
            }
        }
        ClusterEvent::Link { key, account } => ClusterEvent::Link {
            key,
            account: is_account_label(&account).then_some(account)?,
        },
        ClusterEvent::Windows { owner, windows } => ClusterEvent::Windows {
            owner: is_owner(&owner).then_some(owner)?,
            windows,
        },
        ClusterEvent::WindowCalls {
            owner,
            in_flight,
            answered,
        } => {
            if from.is_empty() || from.len() > MAX_NAME_LEN {
                return None;
            }
            ClusterEvent::WindowCalls {
                owner: is_owner(&owner).then_some(owner)?,
                in_flight: in_flight.min(MAX_WAITERS as u32),
                answered,
            }
        }
        ClusterEvent::Freed { budget } => ClusterEvent::Freed {
            budget: is_budget(&budget).then_some(budget)?,
        },
        ClusterEvent::Limit {
            budget,
            kind,
            limit,
        } => ClusterEvent::Limit {
            budget: is_budget(&budget).then_some(budget)?,
            kind,
            limit: (1..=MAX_LIMIT).contains(&limit).then_some(limit)?,
        },
    })
}

/// Whether an owner from another daemon is one this daemon could have.
fn is_owner(owner: &BudgetOwner) -> bool {
    match owner {
        BudgetOwner::Key(_) => true,
        BudgetOwner::Account(label) => is_account_label(label),
    }
}

/// Whether a model class from another daemon is one this daemon could have.
fn is_class(class: &str) -> bool {
    !class.trim().is_empty() && class.len() <= MAX_MODEL_LEN
}

fn is_budget(id: &BudgetId) -> bool {
    is_owner(&id.owner) && is_class(&id.model_class)
}
