//! Property tests of the aggregation over random backends, orders and configurations: every
//! exposed name is unique and routed, the result does not depend on the order backends
//! answered in, and prefix and priority route where they promise.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;
use vmcp_types::config::{BackendToolsConfig, ConflictResolution, ToolOverrideConfig};

use super::*;

const BACKENDS: [&str; 4] = ["a", "b", "c", "d"];
const NAMES: [&str; 5] = ["v", "w", "x", "y", "z"];

/// Random backends (subset of `BACKENDS`, shuffled) with overlapping tools and prompts.
fn arb_caps() -> impl Strategy<Value = Vec<BackendCapabilities>> {
    proptest::sample::subsequence(BACKENDS.to_vec(), 0..=BACKENDS.len())
        .prop_flat_map(|backends| {
            backends
                .into_iter()
                .map(|name| {
                    let names = || {
                        proptest::sample::subsequence(NAMES.to_vec(), 0..=NAMES.len())
                            .prop_shuffle()
                    };
                    (Just(name), names(), names())
                })
                .collect::<Vec<_>>()
        })
        .prop_map(|list| list.into_iter().map(|(b, t, p)| backend(b, &t, &p)).collect::<Vec<_>>())
        .prop_shuffle()
}

fn arb_order() -> impl Strategy<Value = Vec<Arc<str>>> {
    Just(order(&BACKENDS)).prop_shuffle()
}

fn arb_strategy() -> impl Strategy<Value = ConflictResolution> {
    prop_oneof![
        Just(ConflictResolution::Prefix),
        Just(ConflictResolution::Priority),
        Just(ConflictResolution::Manual),
    ]
}

/// Random filters and overrides, some renaming onto names other tools use.
fn arb_tools_config() -> impl Strategy<Value = Vec<BackendToolsConfig>> {
    let targets = prop_oneof![
        Just(None),
        Just(Some("x")),
        Just(Some("b_x")),
        Just(Some("r1")),
        Just(Some("r2"))
    ];
    let entry = (
        proptest::sample::select(BACKENDS.to_vec()),
        proptest::sample::subsequence(NAMES.to_vec(), 0..=2),
        proptest::collection::btree_map(proptest::sample::select(NAMES.to_vec()), targets, 0..3),
    );
    proptest::collection::vec(entry, 0..3).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(backend, filter, renames)| BackendToolsConfig {
                backend: backend.into(),
                filter: filter.into_iter().map(String::from).collect(),
                overrides: renames
                    .into_iter()
                    .map(|(from, to)| {
                        let patch = ToolOverrideConfig {
                            name: to.map(String::from),
                            description: Some("d".into()),
                            annotations: None,
                        };
                        (from.to_owned(), patch)
                    })
                    .collect(),
            })
            .collect()
    })
}

fn arb_config() -> impl Strategy<Value = AggregationConfig> {
    (
        arb_strategy(),
        proptest::sample::subsequence(BACKENDS.to_vec(), 0..=BACKENDS.len()).prop_shuffle(),
        arb_tools_config(),
    )
        .prop_map(|(strategy, priority, tools)| AggregationConfig {
            conflict_resolution: strategy,
            priority_order: priority.into_iter().map(String::from).collect(),
            tools,
            ..AggregationConfig::default()
        })
}

proptest! {
    #[test]
    fn prefix_exposes_every_tool_once_with_its_route(caps in arb_caps(), order in arb_order()) {
        let out = aggregate(&config(ConflictResolution::Prefix), &order, &caps).unwrap();
        let total: usize = caps.iter().map(|c| c.tools.len()).sum();
        prop_assert_eq!(out.tools.len(), total);
        let mut seen = HashSet::new();
        for caps in &caps {
            for tool in &caps.tools {
                let original = tool["name"].as_str().unwrap();
                let exposed = format!("{}_{}", caps.backend, original);
                prop_assert!(seen.insert(exposed.clone()));
                let route = out.routes.tool(&exposed).unwrap();
                prop_assert_eq!(&route.backend, &caps.backend);
                prop_assert_eq!(route.original.as_str(), original);
                let count = names(&out.tools).iter().filter(|n| **n == exposed).count();
                prop_assert_eq!(count, 1);
            }
        }
    }

    #[test]
    fn exposed_names_are_unique_and_routed(
        caps in arb_caps(), order in arb_order(), config in arb_config(),
    ) {
        if let Ok(out) = aggregate(&config, &order, &caps) {
            for (list, is_tool) in [(&out.tools, true), (&out.prompts, false)] {
                let exposed = names(list);
                let unique: BTreeSet<&str> = exposed.iter().copied().collect();
                prop_assert_eq!(unique.len(), exposed.len());
                for name in exposed {
                    let route = if is_tool { out.routes.tool(name) } else { out.routes.prompt(name) };
                    prop_assert!(route.is_some());
                }
            }
        }
    }

    #[test]
    fn result_does_not_depend_on_caps_order(
        caps in arb_caps(), order in arb_order(), config in arb_config(), seed in any::<u64>(),
    ) {
        let mut shuffled = caps.clone();
        let len = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % len);
        shuffled.reverse();
        prop_assert_eq!(aggregate(&config, &order, &caps), aggregate(&config, &order, &shuffled));
    }

    #[test]
    fn priority_routes_to_the_highest_priority_backend(
        caps in arb_caps(),
        order in arb_order(),
        priority_order in proptest::sample::subsequence(BACKENDS.to_vec(), 0..=BACKENDS.len()).prop_shuffle(),
    ) {
        let config = priority(&priority_order);
        let out = aggregate(&config, &order, &caps).unwrap();
        let rank = |backend: &str| {
            priority_order.iter().position(|p| *p == backend).unwrap_or_else(|| {
                priority_order.len() + order.iter().position(|o| &**o == backend).unwrap()
            })
        };
        for name in NAMES {
            let best = caps
                .iter()
                .filter(|c| c.tools.iter().any(|t| t["name"] == name))
                .min_by_key(|c| rank(&c.backend));
            let routed = out.routes.tool(name).map(|r| (&*r.backend, r.original.as_str()));
            prop_assert_eq!(routed, best.map(|c| (&*c.backend, name)));
            let exposed = names(&out.tools).iter().filter(|n| **n == name).count();
            prop_assert_eq!(exposed, usize::from(best.is_some()));
        }
    }
}
