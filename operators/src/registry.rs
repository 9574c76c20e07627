//! Every operator kind's registration: one line each, naming its folder and its planning
//! rule, in the order the planner offers them a node.

/// Declares each operator kind's folder (`pub mod kind;`) and lists its rule in [`rules`].
macro_rules! operators {
    ($($kind:ident => $rule:ident),* $(,)?) => {
        $(pub mod $kind;)*

        /// The planning rules of every operator kind, in the order they are offered a node.
        pub fn rules() -> Vec<std::sync::Arc<dyn volley_sql::stream::rule::PlanRule>> {
            vec![$(std::sync::Arc::new($kind::$rule)),*]
        }
    };
}
