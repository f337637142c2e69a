"""Pure domain logic: validation, actors, the rolling graph, the rule, snapshots."""
