//! [`HandlerGroupBuilder`]: assemble a group by name.
//!
//! Operators start from [`HandlerGroupBuilder::with_defaults`] and `push`,
//! `insert_before`, `insert_after`, `replace` or `remove` handlers by their unique names.
//! The methods chain; the first mistake (an unknown target, a duplicate name) is kept and
//! returned by [`build`](HandlerGroupBuilder::build) as a typed error, never a panic.

use std::sync::Arc;

use crate::builtin::{
    CheckLeaderHandler, CollectStatsHandler, KeepLeaseHandler, PersistStatsHandler,
    RegionLeaseHandler, StatsCache,
};
use crate::error::{DuplicateHandlerSnafu, EmptyHandlerNameSnafu, UnknownHandlerSnafu};
use crate::group::Entry;
use crate::{Error, HandlerGroup, HeartbeatHandler, Result};

/// Builds a [`HandlerGroup`]: the five built-ins in order, then operators' handlers
/// placed by name. Names are checked at [`build`](Self::build), so a typo is an error at
/// start, not a handler silently missing.
///
/// ```
/// use std::sync::Arc;
/// use handlers::builtin::{names, StatsCache};
/// use handlers::{async_trait, Context, HandleControl, HandlerGroupBuilder};
/// use handlers::{Heartbeat, HeartbeatAccumulator, HeartbeatHandler, Role};
///
/// /// Counts datanode heartbeats before their leases are kept.
/// struct Audit;
///
/// #[async_trait]
/// impl HeartbeatHandler for Audit {
///     fn name(&self) -> &str { "audit" }
///     fn is_acceptable(&self, role: Role) -> bool { role == Role::Datanode }
///     async fn handle(&self, _hb: &Heartbeat, _ctx: &Context,
///                     _acc: &mut HeartbeatAccumulator) -> handlers::Result<HandleControl> {
///         Ok(HandleControl::Continue)
///     }
/// }
///
/// let group = HandlerGroupBuilder::with_defaults(Arc::new(StatsCache::default()))
///     .insert_before(names::KEEP_LEASE, Audit)
///     .build()
///     .expect("names are valid");
/// assert_eq!(group.names()[2], "audit");
/// ```
pub struct HandlerGroupBuilder {
    handlers: Vec<Arc<dyn HeartbeatHandler>>,
    error: Option<Error>,
}

impl std::fmt::Debug for HandlerGroupBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerGroupBuilder")
            .field("handlers", &self.names())
            .field("error", &self.error)
            .finish()
    }
}

impl Default for HandlerGroupBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HandlerGroupBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            handlers: Vec::new(),
            error: None,
        }
    }

    /// The default pipeline, in this order, and why:
    /// 1. `collect_stats`: parse and validate; everything after reads its `Stat`.
    /// 2. `check_leader`: a follower answers NOT_LEADER and stops here, so nothing after
    ///    it can grant or record a lease on a follower.
    /// 3. `keep_lease`: the node is alive, on the leader's clock.
    /// 4. `region_lease`: grant leases for the regions it owns.
    /// 5. `persist_stats`: last, because it is the only one that may write to the KV
    ///    backend; nothing that keeps a lease waits behind it.
    pub fn with_defaults(stats: Arc<StatsCache>) -> Self {
        Self::new()
            .push(CollectStatsHandler)
            .push(CheckLeaderHandler)
            .push(KeepLeaseHandler)
            .push(RegionLeaseHandler)
            .push(PersistStatsHandler::new(stats))
    }

    /// The handler names so far, in order.
    pub fn names(&self) -> Vec<&str> {
        self.handlers.iter().map(|h| h.name()).collect()
    }

    /// Appends a handler at the end.
    pub fn push(self, handler: impl HeartbeatHandler) -> Self {
        let at = self.handlers.len();
        self.insert_at(at, Arc::new(handler))
    }

    /// Inserts a handler just before the one named `target`.
    pub fn insert_before(mut self, target: &str, handler: impl HeartbeatHandler) -> Self {
        match self.position("insert_before", target) {
            Some(i) => self.insert_at(i, Arc::new(handler)),
            None => self,
        }
    }

    /// Inserts a handler just after the one named `target`.
    pub fn insert_after(mut self, target: &str, handler: impl HeartbeatHandler) -> Self {
        match self.position("insert_after", target) {
            Some(i) => self.insert_at(i + 1, Arc::new(handler)),
            None => self,
        }
    }

    /// Replaces the handler named `target`, keeping its place. The new handler may keep
    /// the name or take a new one that is not used elsewhere.
    pub fn replace(mut self, target: &str, handler: impl HeartbeatHandler) -> Self {
        let Some(i) = self.position("replace", target) else {
            return self;
        };
        let name = handler.name();
        if name.is_empty() {
            return self.fail(EmptyHandlerNameSnafu.build());
        }
        if name != target && self.handlers.iter().any(|h| h.name() == name) {
            return self.fail(DuplicateHandlerSnafu { name }.build());
        }
        self.handlers[i] = Arc::new(handler);
        self
    }

    /// Removes the handler named `target`.
    pub fn remove(mut self, target: &str) -> Self {
        if let Some(i) = self.position("remove", target) {
            self.handlers.remove(i);
        }
        self
    }

    /// Finishes the group, or returns the first error made while building it.
    pub fn build(self) -> Result<HandlerGroup> {
        if let Some(err) = self.error {
            return Err(err);
        }
        Ok(HandlerGroup::from_entries(
            self.handlers.into_iter().map(Entry::new).collect(),
        ))
    }

    fn position(&mut self, op: &'static str, target: &str) -> Option<usize> {
        if self.error.is_some() {
            return None;
        }
        let found = self.handlers.iter().position(|h| h.name() == target);
        if found.is_none() {
            let known = self.names().join(", ");
            self.error = Some(
                UnknownHandlerSnafu {
                    op,
                    name: target,
                    known,
                }
                .build(),
            );
        }
        found
    }

    fn insert_at(mut self, at: usize, handler: Arc<dyn HeartbeatHandler>) -> Self {
        if self.error.is_some() {
            return self;
        }
        let name = handler.name();
        if name.is_empty() {
            return self.fail(EmptyHandlerNameSnafu.build());
        }
        if self.handlers.iter().any(|h| h.name() == name) {
            let err = DuplicateHandlerSnafu { name }.build();
            return self.fail(err);
        }
        self.handlers.insert(at, handler);
        self
    }

    fn fail(mut self, err: Error) -> Self {
        if self.error.is_none() {
            self.error = Some(err);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use crate::builtin::names::*;
    use crate::test_util::{defaults, Probe};
    use crate::{Error, HandlerGroupBuilder};

    #[test]
    fn default_order_is_pinned() {
        let group = defaults().build().expect("defaults build");
        assert_eq!(
            group.names(),
            vec![
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                PERSIST_STATS
            ]
        );
    }

    #[test]
    fn builder_inserts_replaces_and_removes_by_name() {
        let names = |b: HandlerGroupBuilder| {
            b.build()
                .expect("valid")
                .names()
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(defaults().insert_before(COLLECT_STATS, Probe::named("first"))),
            [
                "first",
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                PERSIST_STATS
            ]
        );
        assert_eq!(
            names(defaults().insert_after(CHECK_LEADER, Probe::named("x"))),
            [
                COLLECT_STATS,
                CHECK_LEADER,
                "x",
                KEEP_LEASE,
                REGION_LEASE,
                PERSIST_STATS
            ]
        );
        assert_eq!(
            names(defaults().insert_after(PERSIST_STATS, Probe::named("last"))),
            [
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                PERSIST_STATS,
                "last"
            ]
        );
        assert_eq!(
            names(defaults().insert_before(PERSIST_STATS, Probe::named("y"))),
            [
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                "y",
                PERSIST_STATS
            ]
        );
        assert_eq!(
            names(defaults().push(Probe::named("tail"))),
            [
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                PERSIST_STATS,
                "tail"
            ]
        );
        assert_eq!(
            names(defaults().replace(PERSIST_STATS, Probe::named("my_stats"))),
            [
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                "my_stats"
            ]
        );
        assert_eq!(
            names(defaults().replace(KEEP_LEASE, Probe::named(KEEP_LEASE))),
            [
                COLLECT_STATS,
                CHECK_LEADER,
                KEEP_LEASE,
                REGION_LEASE,
                PERSIST_STATS
            ]
        );
        assert_eq!(
            names(defaults().remove(CHECK_LEADER)),
            [COLLECT_STATS, KEEP_LEASE, REGION_LEASE, PERSIST_STATS]
        );
        assert_eq!(
            names(HandlerGroupBuilder::new().push(Probe::named("only"))),
            ["only"]
        );
    }

    #[test]
    fn unknown_names_are_typed_errors_for_every_operation() {
        let cases = [
            (
                "insert_before",
                defaults().insert_before("nope", Probe::named("a")),
            ),
            (
                "insert_after",
                defaults().insert_after("nope", Probe::named("a")),
            ),
            ("replace", defaults().replace("nope", Probe::named("a"))),
            ("remove", defaults().remove("nope")),
        ];
        for (op, builder) in cases {
            match builder.build() {
                Err(Error::UnknownHandler {
                    op: got,
                    name,
                    known,
                }) => {
                    assert_eq!((got, name.as_str()), (op, "nope"));
                    assert!(
                        known.contains(KEEP_LEASE),
                        "the error lists known names: {known}"
                    );
                }
                other => panic!("{op}: expected UnknownHandler, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_and_empty_names_are_typed_errors() {
        let dup = |b: HandlerGroupBuilder| matches!(b.build(), Err(Error::DuplicateHandler { name }) if name == KEEP_LEASE);
        assert!(dup(defaults().push(Probe::named(KEEP_LEASE))));
        assert!(dup(
            defaults().insert_after(CHECK_LEADER, Probe::named(KEEP_LEASE))
        ));
        assert!(dup(
            defaults().insert_before(CHECK_LEADER, Probe::named(KEEP_LEASE))
        ));
        assert!(dup(
            defaults().replace(REGION_LEASE, Probe::named(KEEP_LEASE))
        ));
        assert!(matches!(
            defaults().push(Probe::named("")).build(),
            Err(Error::EmptyHandlerName)
        ));
        // The first error wins, later operations do not hide it.
        let err = defaults()
            .remove("a")
            .remove("b")
            .build()
            .expect_err("invalid");
        assert!(
            matches!(err, Error::UnknownHandler { ref name, .. } if name == "a"),
            "{err}"
        );
    }
}
