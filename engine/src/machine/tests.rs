//! Transition tests live in `engine/tests/`, on configurations loaded from
//! YAML; this module keeps the pure helpers' unit tests.
