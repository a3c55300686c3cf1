"""HTTP entry points: blueprints whose bodies translate between Functions types and the core."""
