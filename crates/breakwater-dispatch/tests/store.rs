//! The store conformance suite: the contract of [`Store`] (its module and
//! method docs in `src/store/mod.rs`), written once against
//! `Arc<dyn Store>` and the public API only, and run for every backend, so
//! that the backends cannot drift apart.
//!
//! Each test is a function `async fn(&mut dyn Handle)` in one of the group
//! modules below (`insert`, `updates`, ...). [`conformance!`] makes, for one
//! backend, a module of `#[tokio::test]`s, one for each test of each group:
//! `cargo test --test store sqlite::backlog::` runs one group on SQLite.
//!
//! To add a backend:
//!
//! 1. implement [`Backend`] (a fresh, empty database for each test) and
//!    [`Handle`] (the store on it, and `reopen`: close the store and open the
//!    same database again, as a restarted single instance would, releasing
//!    every claim it held) in `tests/store/backends.rs`;
//! 2. add its line next to `conformance!(sqlite: SqliteBackend)` at the end
//!    of this file.
//!
//! A new test is a function in a group module and its name in the list in
//! [`conformance!`]; one left out of the list is never called, and the
//! dead-code lint says so.
//!
//! Times: a store stamps what it accepts with the wall clock (Unix ms). The
//! tests compare times the store handed back, or pick times an hour or
//! more away from the wall clock; none sleeps to wait for a change.
//!
//! [`Store`]: breakwater_dispatch::store::Store

// The suite's files are under `tests/store/`, not test targets of their own.
#[path = "store/backends.rs"]
mod backends;
#[path = "store/fixtures.rs"]
mod fixtures;

#[path = "store/actions.rs"]
mod actions;
#[path = "store/backlog.rs"]
mod backlog;
#[path = "store/dead_letters.rs"]
mod dead_letters;
#[path = "store/history.rs"]
mod history;
#[path = "store/insert.rs"]
mod insert;
#[path = "store/lifecycle.rs"]
mod lifecycle;
#[path = "store/maintenance.rs"]
mod maintenance;
#[path = "store/operations.rs"]
mod operations;
/// Postgres alone: its upgrade to the history schema, fencing and fleets.
#[path = "store/postgres_history.rs"]
mod postgres_history;
#[path = "store/scale.rs"]
mod scale;
#[path = "store/updates.rs"]
mod updates;

use backends::{Backend, PostgresBackend, SqliteBackend};

/// `conformance!(module: backend)` makes `mod module`, with one
/// `#[tokio::test]` for each test of the suite, run on a fresh store of
/// `backend` (an expression of a type that implements [`Backend`]).
macro_rules! conformance {
    ($module:ident: $backend:expr) => {
        mod $module {
            use super::*;

            /// The backend these tests run on.
            fn backend() -> Box<dyn Backend> {
                Box::new($backend)
            }

            conformance!(@groups
                insert {
                    claimed_actions_are_handed_back_in_order,
                    a_known_event_id_is_a_duplicate_and_adds_nothing,
                    a_backlogged_action_is_stored_unclaimed_and_not_handed_back,
                    a_parked_action_is_stored_parked_until_its_time,
                    a_dead_lettered_action_is_stored_with_its_reason_and_not_handed_back,
                    an_event_without_actions_is_stored,
                    an_events_json_comes_back_as_it_was_given,
                }
                updates {
                    delivered_records_the_outcome_and_ends_the_wait,
                    retry_records_the_failure_and_keeps_the_claim,
                    parked_records_the_time_without_an_attempt,
                    dead_letter_moves_the_action_to_the_dead_letters,
                    an_endpoints_park_shows_its_waiting_actions_parked,
                    held_actions_wait_for_release_held,
                    released_hands_a_claimed_action_back,
                    snapshots_are_kept_by_endpoint_and_overwritten,
                    endpoints_are_disabled_with_a_reason_and_enabled_again,
                    an_event_record_shows_each_actions_state,
                    updates_are_applied_in_the_order_given,
                    an_update_for_an_unknown_action_is_harmless,
                }
                backlog {
                    claim_backlog_takes_due_actions_earliest_due_first_a_page_at_a_time,
                    claim_backlog_takes_only_unclaimed_waiting_actions_of_its_endpoint,
                    backlogged_endpoints_names_endpoints_with_unclaimed_due_work,
                    backlogs_count_waiting_actions_claimed_or_not_and_the_oldest,
                    a_reopen_puts_claimed_actions_back_in_the_backlog,
                }
                dead_letters {
                    dead_letters_are_listed_oldest_first_up_to_the_limit,
                    replayed_dead_letters_are_pending_and_claimable_again,
                    purged_dead_letters_are_gone,
                }
                maintenance {
                    oldest_pending_is_the_oldest_action_still_to_deliver,
                    counts_are_by_status,
                    prune_removes_old_fully_delivered_events_and_nothing_else,
                }
                scale {
                    a_thousand_events_in_one_batch_are_all_stored,
                    two_tasks_inserting_at_once_store_each_event_once,
                    two_tasks_claiming_at_once_claim_each_action_once,
                }
                history {
                    attempts_are_recorded_with_their_action_in_order,
                    an_attempt_is_kept_even_when_its_outcome_is_not,
                    a_response_body_comes_back_byte_for_byte,
                    attempts_go_with_pruned_events_and_stay_with_dead_letters,
                    purge_actions_deletes_only_dead_letters_with_their_attempts,
                }
                actions {
                    action_records_carry_their_events_keys,
                    actions_are_filtered_by_each_field,
                    pages_are_stable_while_new_actions_arrive,
                    replay_actions_touches_only_dead_lettered_and_delivered_ones,
                    endpoint_counts_show_a_parked_endpoints_actions_as_parked,
                }
                operations {
                    a_replay_jobs_progress_counts_its_actions_by_shown_status,
                    a_cancelled_replay_job_stays_cancelled,
                    a_running_job_of_a_stopped_instance_is_taken_up_where_it_was,
                    audit_entries_round_trip_newest_first,
                }
                lifecycle {
                    an_empty_store_has_nothing,
                    everything_survives_a_reopen,
                    a_closed_store_takes_no_more_writes,
                }
            );
        }
    };
    (@groups $($group:ident { $($test:ident),* $(,)? })*) => {
        $(
            mod $group {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        let mut db = super::backend().fresh().await;
                        crate::$group::$test(&mut *db).await;
                        db.close().await;
                    }
                )*
            }
        )*
    };
}

// One line a backend.
conformance!(sqlite: SqliteBackend);
conformance!(postgres: PostgresBackend);
