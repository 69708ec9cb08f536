//! The registry client against a real registry.
