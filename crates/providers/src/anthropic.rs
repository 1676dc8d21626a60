//! Anthropic Messages API adapter (to be written).
