//! Message policies (FORMAT.md §8).
